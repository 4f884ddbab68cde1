// The priors panel: earlier studies of the patient at the PACS (docs/priors.md), retrieved on
// demand and opened beside the current study.

import { api, ApiError, type Prior, type PriorList } from '../api';
import { clear, el, kbd } from '../dom';

/** How often the panel asks again while a lookup or a retrieval is under way. */
const POLL_MS = 1500;

/** The state a radiologist reads: found (not requested), retrieving, retrieved or failed. */
export function priorState(p: Prior): 'found' | 'retrieving' | 'retrieved' | 'failed' {
  switch (p.retrieve_status) {
    case 'queued': case 'retrieving': return 'retrieving';
    case 'retrieved': return p.retrieved_study_id ? 'retrieved' : 'retrieving';
    case 'failed': return 'failed';
    default: return 'found';
  }
}

/** YYYYMMDD → YYYY-MM-DD (anything else as given). */
export function priorDate(date: string): string {
  return /^\d{8}$/.test(date) ? `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6)}` : date || 'no date';
}

const LOOKUP_LINES: Record<string, string> = {
  none: 'No PACS is configured for this facility: priors cannot be looked up.',
  failed: 'The prior lookup at the PACS failed (the PACS was unreachable or refused); '
    + 'this study is reviewable without priors.',
  pending: 'Looking for priors at the PACS…',
};

export interface PriorsHost {
  studyId: string;
  /** Shows the retrieved prior (its sidecar study id) beside the current study. */
  openBeside(prior: Prior): Promise<void>;
}

export class PriorsPanel {
  readonly root = el('section', { class: 'priors', 'aria-label': 'Prior studies',
    'data-testid': 'priors-panel', 'data-lookup': 'loading' });
  private readonly line = el('p', { class: 'priors-line', role: 'status', 'data-testid': 'priors-line' });
  private readonly list = el('ul', { class: 'prior-list', 'aria-label': 'Prior studies of this patient' });
  private readonly message = el('p', { class: 'priors-message', role: 'status', 'data-testid': 'priors-message' });
  private reply: PriorList | null = null;
  /** The prior the radiologist asked to open, while it is being retrieved. */
  private wanted = '';
  private timer = 0;
  private closed = false;

  constructor(private readonly host: PriorsHost) {
    this.root.append(
      el('div', { class: 'panel-head' }, el('h2', { text: 'Priors' }),
        el('span', { class: 'hint' }, kbd('P'), ' focus')),
      this.line, this.list, this.message);
  }

  async load(): Promise<void> {
    if (this.closed) return;
    try {
      this.reply = await api.priors(this.host.studyId);
    } catch (err) {
      this.reply = null;
      this.line.textContent = `Cannot list the priors: ${err instanceof ApiError ? err.message : 'network error'}`;
      this.root.dataset['lookup'] = 'error';
      this.schedule();
      return;
    }
    if (this.closed) return;
    // The prior asked for: opened once retrieved, or the reason it failed; no longer waited
    // for either way (its button is drawn enabled again).
    const wanted = this.reply.priors.find((p) => p.prior_id === this.wanted);
    const state = wanted ? priorState(wanted) : null;
    const done = state === 'retrieved' ? wanted : undefined;
    if (wanted && state === 'failed') {
      this.message.textContent = `Could not retrieve the prior of ${priorDate(wanted.study_date)}: `
        + (wanted.last_error || 'the PACS refused');
    }
    if (state === 'retrieved' || state === 'failed') this.wanted = '';
    if (done) this.message.textContent = '';
    this.draw();
    this.schedule();
    if (done) await this.host.openBeside(done);
  }

  /** Asks again while something is under way (a lookup pending or a retrieval). */
  private schedule(): void {
    window.clearTimeout(this.timer);
    if (this.closed) return;
    const busy = !this.reply || this.reply.lookup_status === 'pending' || this.wanted !== ''
      || this.reply.priors.some((p) => priorState(p) === 'retrieving');
    if (busy) this.timer = window.setTimeout(() => void this.load(), POLL_MS);
  }

  /** "Open beside": retrieves the prior if needed, then shows it once it is in the sidecar. */
  async open(prior: Prior): Promise<void> {
    if (priorState(prior) === 'retrieved') {
      await this.host.openBeside(prior);
      return;
    }
    this.wanted = prior.prior_id;
    this.message.textContent = `Retrieving the prior of ${priorDate(prior.study_date)} from the PACS…`;
    try {
      const queued = await api.retrievePrior(this.host.studyId, prior.prior_id);
      if (this.reply) {
        this.reply = { ...this.reply, priors: this.reply.priors.map((p) => p.prior_id === queued.prior_id ? queued : p) };
        this.draw();
      }
    } catch (err) {
      this.wanted = '';
      this.message.textContent = `Could not retrieve the prior: ${err instanceof ApiError ? err.message : 'network error'}`;
      return;
    }
    await this.load();
  }

  say(text: string): void { this.message.textContent = text; }

  /** Moves the keyboard focus to the first prior's button (the P key). */
  focus(): void {
    (this.list.querySelector('button') ?? this.root).focus();
  }

  private draw(): void {
    const reply = this.reply;
    if (!reply) return;
    this.root.dataset['lookup'] = reply.lookup_status;
    this.line.textContent = LOOKUP_LINES[reply.lookup_status]
      ?? (reply.priors.length ? '' : 'No prior studies of this patient at the PACS.');
    this.line.classList.toggle('failed', reply.lookup_status === 'failed' || reply.lookup_status === 'none');
    clear(this.list);
    for (const p of reply.priors) {
      const state = priorState(p);
      const date = priorDate(p.study_date);
      const button = el('button', { type: 'button', class: 'small', 'data-action': 'open-prior',
        'aria-label': `Open beside: prior of ${date}`, disabled: state === 'retrieving' || this.wanted === p.prior_id,
        text: state === 'failed' ? 'Retry and open beside' : 'Open beside' });
      button.addEventListener('click', () => void this.open(p));
      const stateText = state === 'retrieved' ? `retrieved (${p.retrieved_count})`
        : state === 'failed' ? `failed${p.last_error ? `: ${p.last_error}` : ''}` : state;
      this.list.appendChild(el('li', { class: `prior-item p-${state}`, 'data-prior-id': p.prior_id,
        'data-state': state },
        el('div', { class: 'line1' }, el('span', { class: 'prior-date', text: date }),
          el('span', { class: `prior-state s-${state}`, 'data-testid': 'prior-state', text: stateText })),
        el('div', { class: 'prior-desc', text: p.description || '(no description)' }),
        el('div', { class: 'prior-meta' },
          el('span', { text: p.modalities.join(', ') || '–' }),
          el('span', { text: p.accession ? `Acc. ${p.accession}` : 'no accession' }),
          el('span', { text: `${p.instance_count} images` })),
        button));
    }
  }

  destroy(): void {
    this.closed = true;
    window.clearTimeout(this.timer);
  }
}
