// The typed client of the review API (docs/review-api.md); ROUTES is checked against
// the gateway's OpenAPI document by tests/test_frontend_contract.py.

export interface Patient {
  name: string; name_ideographic?: string; name_phonetic?: string; id: string;
  sex?: string; birth_date?: string; age?: string;
}

export type AiStatus = 'pending' | 'findings' | 'no_findings' | 'failed' | string;

export interface Study {
  id: string; study_instance_uid: string; accession: string; facility: string;
  modality: string; description?: string; study_date?: string | null;
  received_at: string | null; state: string; ai_status: AiStatus;
  finding_count?: number; max_confidence?: number | null; assigned_to?: string | null;
  eligibility?: { eligible: boolean; reason: string }; partial?: boolean;
  patient?: Patient; referring_physician?: string; body_part?: string;
}

export interface Series {
  id: string; series_instance_uid: string; modality: string; description: string;
  body_part: string; instance_count: number; slice_count: number;
  thumbnail_url: string | null; preview_url: string | null;
}

export interface StudyDetail extends Study {
  series: Series[];
  state_history: { state: string; at: string | null; from_state: string | null; actor: string }[];
}

export interface Decision { action: string; reason?: string; note?: string; by: string; at: string }

export interface Finding {
  id: string; label: string; code: string; confidence: number; kind: string;
  model: { name: string; version: string }; ai_run_id: string;
  series_instance_uid: string; sop_instance_uid: string; frame: number;
  bbox_px: number[] | null; center_mm: number[] | null; points_px: number[];
  measurements: Record<string, number>; summary: string; slice_index: number;
  series_id: string | null; origin?: 'ai' | 'radiologist'; below_threshold?: boolean;
  version: number; decision: Decision | null;
  current?: { label?: string; bbox_px?: number[] | null; text?: string; include_in_draft?: boolean };
}

export interface DraftSentence { text: string; finding_ids: string[] }

/** An assistive draft version (docs/report-loop.md, "Assistive drafts"); never a report. */
export interface Draft {
  id: string; study_id: string; version: number; status: 'generated' | 'edited' | 'accepted' | string;
  generator: string; text: string; sentences: DraftSentence[]; author: string;
  assistive: true; notice: string; trace_id: string; created_at: string | null;
}

export interface DraftState { current: Draft | null; versions: Draft[]; llm_error: string }

export interface Me { username: string; role: string; facilities: string[] }

export interface LoginResult extends Me { access_token: string; csrf_token: string }

export interface StudyEvent {
  id: string; state: string; ai_status: AiStatus; finding_count: number;
  max_confidence: number | null; assigned_to: string | null;
}

export interface DecisionBody {
  action: 'accept' | 'reject' | 'edit_geometry' | 'edit_text' | 'relabel' | 'ignore'
    | 'include_in_draft' | 'exclude_from_draft';
  expected_version: number; reason?: string; note?: string; bbox_px?: number[];
  label?: string; text?: string;
}

export const REJECT_REASONS: [string, string][] = [
  ['false_positive', 'False positive'], ['wrong_location', 'Wrong location'],
  ['clinically_insignificant', 'Clinically insignificant'], ['artifact', 'Artifact'],
  ['other', 'Other'],
];

/** Every route this client calls: [method, OpenAPI path]. */
export const ROUTES = [
  ['POST', '/api/v1/auth/login'],
  ['POST', '/api/v1/auth/logout'],
  ['GET', '/api/v1/me'],
  ['GET', '/api/v1/studies'],
  ['GET', '/api/v1/studies/{study_id}'],
  ['POST', '/api/v1/studies/{study_id}/claim'],
  ['POST', '/api/v1/studies/{study_id}/release'],
  ['POST', '/api/v1/studies/{study_id}/open'],
  ['POST', '/api/v1/studies/{study_id}/complete'],
  ['POST', '/api/v1/studies/{study_id}/access-events'],
  ['GET', '/api/v1/studies/{study_id}/findings'],
  ['POST', '/api/v1/studies/{study_id}/findings'],
  ['POST', '/api/v1/studies/{study_id}/findings/{finding_id}/decisions'],
  ['GET', '/api/v1/events'],
  ['GET', '/api/v1/studies/{study_id}/draft'],
  ['POST', '/api/v1/studies/{study_id}/draft'],
  ['PUT', '/api/v1/studies/{study_id}/draft'],
  ['POST', '/api/v1/studies/{study_id}/draft/accept'],
] as const;

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, readonly reason: string,
              message: string, readonly body: unknown) {
    super(message);
  }
}

const CSRF_COOKIE = 'sidecar_csrf';
let csrfToken = '';

function csrf(): string {
  if (csrfToken) return csrfToken;
  for (const part of document.cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join('='));
  }
  return '';
}

/** Called with every 401: the app shows the login view. */
let onUnauthorized: () => void = () => undefined;
export function setUnauthorizedHandler(handler: () => void): void { onUnauthorized = handler; }

async function call<T>(method: string, path: string, body?: unknown,
                       query?: Record<string, string>): Promise<T> {
  const qs = query ? new URLSearchParams(
    Object.entries(query).filter(([, v]) => v !== '')).toString() : '';
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf();
  const reply = await fetch(`/api/v1${path}${qs ? `?${qs}` : ''}`, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? null : JSON.stringify(body),
  });
  if (reply.status === 204) return undefined as T;
  const data: unknown = await reply.json().catch(() => null);
  if (!reply.ok) {
    const err = (data as { error?: { code?: string; reason?: string; message?: string } } | null)
      ?.error ?? {};
    if (reply.status === 401 && path !== '/auth/login') onUnauthorized();
    throw new ApiError(reply.status, err.code ?? 'HTTP', err.reason ?? String(reply.status),
                       err.message ?? `HTTP ${reply.status}`, data);
  }
  return data as T;
}

const enc = encodeURIComponent;

export const api = {
  async login(username: string, password: string): Promise<LoginResult> {
    const result = await call<LoginResult>('POST', '/auth/login', { username, password });
    csrfToken = result.csrf_token ?? '';
    return result;
  },
  async logout(): Promise<void> {
    try { await call<void>('POST', '/auth/logout'); } finally { csrfToken = ''; }
  },
  me: () => call<Me>('GET', '/me'),
  studies: (query: Record<string, string>) =>
    call<{ studies: Study[]; next_page_token: string }>('GET', '/studies', undefined, query),
  study: (id: string) => call<StudyDetail>('GET', `/studies/${enc(id)}`),
  claim: (id: string) => call<Study>('POST', `/studies/${enc(id)}/claim`),
  release: (id: string) => call<Study>('POST', `/studies/${enc(id)}/release`),
  open: (id: string) => call<Study>('POST', `/studies/${enc(id)}/open`),
  complete: (id: string) => call<Study>('POST', `/studies/${enc(id)}/complete`),
  accessEvent: (id: string, body: { type: 'overlay_toggled' | 'finding_selected';
                                   finding_id?: string; visible?: boolean }) =>
    call<void>('POST', `/studies/${enc(id)}/access-events`, body),
  findings: (id: string) => call<{ findings: Finding[] }>('GET', `/studies/${enc(id)}/findings`),
  addFinding: (id: string, body: { label: string; bbox_px: number[]; series_instance_uid: string;
                                   sop_instance_uid: string; frame: number; text?: string }) =>
    call<Finding>('POST', `/studies/${enc(id)}/findings`, body),
  decide: (id: string, findingId: string, body: DecisionBody) =>
    call<Finding>('POST', `/studies/${enc(id)}/findings/${enc(findingId)}/decisions`, body),
  draft: (id: string) => call<DraftState>('GET', `/studies/${enc(id)}/draft`),
  generateDraft: (id: string) =>
    call<{ draft: Draft | null; llm_failed: boolean; llm_error: string }>('POST', `/studies/${enc(id)}/draft`),
  editDraft: (id: string, body: { expected_version: number; text: string }) =>
    call<Draft>('PUT', `/studies/${enc(id)}/draft`, body),
  acceptDraft: (id: string, body: { expected_version: number }) =>
    call<Draft>('POST', `/studies/${enc(id)}/draft/accept`, body),
  eventsUrl: '/api/v1/events',
};

/** The current finding carried by a 409 VERSION_CONFLICT, if any. */
export function conflictCurrent(error: unknown): Finding | null {
  if (error instanceof ApiError && error.status === 409) {
    const current = (error.body as { current?: Finding } | null)?.current;
    return current ?? null;
  }
  return null;
}
