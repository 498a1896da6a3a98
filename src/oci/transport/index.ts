/**
 * transport: HTTP to registries: the client (proxies, TLS, traces), /v2/ ping with the https-then-http policy,
 * WWW-Authenticate challenges and bearer tokens, registry error mapping, and the one retry policy.
 */
export * from "./http-client.js";
export * from "./network-errors.js";
export * from "./insecure.js";
export * from "./proxy.js";
export * from "./tls.js";
export * from "./challenge.js";
export * from "./scope.js";
export * from "./registry-errors.js";
export * from "./retry.js";
export { RegistryTransport, type RegistryTransportOptions, type RegistryRequest } from "./registry-transport.js";
