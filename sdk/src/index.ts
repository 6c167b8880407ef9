export {
  BackendClient,
  ProgressDBClient,
  createBackendClient,
  createFrontendClient,
  type BackendClientOptions,
  type ClientOptions,
  type FrontendClientOptions,
  type FrontendTokenClientOptions,
  type IterateMessagesOptions,
  type ListMessagesOptions,
  type ListThreadsOptions,
  type Member,
  type Message,
  type MessagePage,
  type MessageVersion,
  type NewMessage,
  type ReadMark,
  type Role,
  type SendMessage,
  type SendOptions,
  type Thread,
  type ThreadCreate,
  type ThreadUpdate,
  type UnreadList,
} from './client';
export { NetworkError, ProgressDBError, RealtimeError, type Problem } from './errors';
export type { Paths, Schemas } from './generated/openapi';
export { OPERATIONS } from './generated/openapi';
export { signUserId } from './signing';
export type { WebSocketConstructor, WebSocketLike } from './socket';
export { Tail, type TailEvents, type TailOptions, type TailTransport, type ThreadEvent } from './tail';
export type { RequestOptions, RetryOptions, TransportOptions } from './transport';
