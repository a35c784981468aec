// Every HTTP endpoint of docs/openapi.json by operationId: method, path template, whether it
// needs a token and whether repeating it is harmless (a test keeps this table and the document equal).

/** @type {{ [K in keyof import('./openapi.js').operations]: import('./types.js').Endpoint }} */
export const ENDPOINTS = {
  getFeatures: { method: 'GET', path: '/api/v1/features', auth: false, idempotent: true },
  createAuthChallenge: { method: 'POST', path: '/api/v1/auth/challenge', auth: false, idempotent: true },
  verifyAuthChallenge: { method: 'POST', path: '/api/v1/auth/verify', auth: false, idempotent: false },
  getMe: { method: 'GET', path: '/api/v1/users/me', auth: true, idempotent: true },
  updateMe: { method: 'PATCH', path: '/api/v1/users/me', auth: true, idempotent: true },
  getUser: { method: 'GET', path: '/api/v1/users/{id}', auth: true, idempotent: true },
  findUsersByWallet: { method: 'GET', path: '/api/v1/users', auth: true, idempotent: true },
  createConversation: { method: 'POST', path: '/api/v1/conversations', auth: true, idempotent: false },
  listConversations: { method: 'GET', path: '/api/v1/conversations', auth: true, idempotent: true },
  getConversation: { method: 'GET', path: '/api/v1/conversations/{id}', auth: true, idempotent: true },
  addConversationMember: { method: 'POST', path: '/api/v1/conversations/{id}/members', auth: true, idempotent: true },
  removeConversationMember: { method: 'DELETE', path: '/api/v1/conversations/{id}/members/{user_id}', auth: true, idempotent: false },
  markConversationRead: { method: 'POST', path: '/api/v1/conversations/{id}/read', auth: true, idempotent: true },
  rotateConversationKey: { method: 'POST', path: '/api/v1/conversations/{id}/rotate-key', auth: true, idempotent: false },
  listConversationMessages: { method: 'GET', path: '/api/v1/conversations/{id}/messages', auth: true, idempotent: true },
  // idempotent through client_message_id, which sendMessage always sets
  sendMessage: { method: 'POST', path: '/api/v1/messages', auth: true, idempotent: true },
  listMessages: { method: 'GET', path: '/api/v1/messages', auth: true, idempotent: true },
  editMessage: { method: 'PATCH', path: '/api/v1/messages/{id}', auth: true, idempotent: true },
  deleteMessage: { method: 'DELETE', path: '/api/v1/messages/{id}', auth: true, idempotent: false },
  getMessageAtRest: { method: 'GET', path: '/api/v1/messages/{id}/at-rest', auth: true, idempotent: true },
  healthz: { method: 'GET', path: '/healthz', auth: false, idempotent: true },
  readyz: { method: 'GET', path: '/readyz', auth: false, idempotent: true },
  metrics: { method: 'GET', path: '/metrics', auth: false, idempotent: true },
  searchMessages: { method: 'GET', path: '/api/v1/search', auth: true, idempotent: true },
};
