/**
 * authn: which credentials a registry gets: explicit ones, Docker's config.json and credential helpers, podman's
 * auth.json, else anonymous. Reads configuration and runs helpers; never sends a request.
 */
export * from "./credential.js";
export { credentialKey, resolveCredentials, DOCKER_HUB_CREDENTIAL_KEY, type CredentialOptions } from "./keychain.js";
