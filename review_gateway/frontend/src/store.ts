// A small store: the signed-in user, worklist query and a change signal views subscribe to.

import type { Me } from './api';

export interface WorklistQuery {
  state: string; modality: string; ai_status: string; date_from: string; date_to: string;
  assigned: string; sort: string; page_size: string;
  /** Patient search: name, patient ID or accession (the API's `q`). */
  q: string;
}

export interface State {
  me: Me | null;
  worklist: WorklistQuery;
  /** Page tokens of the pages before the current one (for "previous"). */
  pages: string[];
  pageToken: string;
}

type Listener = (state: State) => void;

export const DEFAULT_QUERY: WorklistQuery = {
  state: '', modality: '', ai_status: '', date_from: '', date_to: '', assigned: '',
  sort: '-received_at', page_size: '50', q: '',
};

const state: State = {
  me: null,
  worklist: { ...DEFAULT_QUERY },
  pages: [],
  pageToken: '',
};
const listeners = new Set<Listener>();

export const store = {
  get: (): Readonly<State> => state,
  set(patch: Partial<State>): void {
    Object.assign(state, patch);
    for (const listener of listeners) listener(state);
  },
  subscribe(listener: Listener): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
};
