import type { Route } from './router.js';

export interface Features {
  /** GET /api/v1/search is served (SEARCH_ENABLED). */
  search: boolean;
  /** GET /api/v1/messages/{id}/at-rest is served (SOTALK_AT_REST_PANEL, never in production). */
  at_rest_panel: boolean;
  /** Largest message content in UTF-8 bytes (MAX_MESSAGE_BYTES). */
  max_message_bytes: number;
}

/**
 * What this server offers, without authentication: clients discover optional endpoints here
 * instead of probing them (a probe is a 404 in every log and metric when a feature is off).
 */
export function featureRoutes(features: Features): Route[] {
  const body = { features };
  return [{ method: 'get', path: '/api/v1/features', auth: false, handle: () => ({ status: 200, body }) }];
}
