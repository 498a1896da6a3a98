// The undici modules the transport needs, loaded directly: undici's index pulls in fetch, WebSocket, caches
// and mocks (~120 ms of start-up) that a CLI pull never uses. undici is pinned to an exact version in package.json.
declare module "undici/lib/dispatcher/env-http-proxy-agent.js" {
  import type { EnvHttpProxyAgent } from "undici";
  const EnvHttpProxyAgentClass: typeof EnvHttpProxyAgent;
  export default EnvHttpProxyAgentClass;
}

declare module "undici/lib/api/api-request.js" {
  import type { Dispatcher } from "undici";
  function request(this: Dispatcher, options: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData>;
  export default request;
}

declare module "undici/lib/api/api-connect.js" {
  import type { Dispatcher } from "undici";
  const connect: Dispatcher["connect"];
  export default connect;
}

declare module "undici/lib/dispatcher/dispatcher.js" {
  import type { Dispatcher } from "undici";
  const DispatcherClass: typeof Dispatcher;
  export default DispatcherClass;
}

declare module "undici/lib/dispatcher/agent.js" {
  import type { Agent } from "undici";
  const AgentClass: typeof Agent;
  export default AgentClass;
}

declare module "undici/lib/dispatcher/pool.js" {
  import type { Pool } from "undici";
  const PoolClass: typeof Pool;
  export default PoolClass;
}

declare module "undici/lib/dispatcher/proxy-agent.js" {
  import type { ProxyAgent } from "undici";
  const ProxyAgentClass: typeof ProxyAgent;
  export default ProxyAgentClass;
}

declare module "undici/lib/interceptor/redirect.js" {
  import type { Dispatcher } from "undici";
  function createRedirectInterceptor(options?: { maxRedirections?: number }): Dispatcher.DispatcherComposeInterceptor;
  export default createRedirectInterceptor;
}

declare module "undici/lib/interceptor/retry.js" {
  import type { Dispatcher, RetryHandler } from "undici";
  function createRetryInterceptor(options?: RetryHandler.RetryOptions): Dispatcher.DispatcherComposeInterceptor;
  export default createRetryInterceptor;
}
