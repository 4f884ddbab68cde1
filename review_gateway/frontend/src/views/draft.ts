// The assistive draft panel: generate, read (sentence → findings), edit with versions, accept.

import { api, ApiError, type Draft, type Finding } from '../api';
import { clear, el, formatDate, kbd } from '../dom';
import { currentLabel } from '../viewer/overlay';

const ASSISTIVE = 'Assistive draft — not a report; never sent anywhere as a report.';

export interface DraftHost {
  studyId: string;
  findings(): Finding[];
  select(f: Finding): void;
}

/** Who wrote a draft, in words: the template drafter is named as such. */
export function generatorLabel(generator: string): string {
  if (generator.startsWith('template-drafter')) {
    return `Template drafter (deterministic template, no language model) · ${generator.split(' ')[0]}`;
  }
  if (generator.startsWith('llm:')) return `Language model: ${generator.slice(4)}`;
  return generator || 'unknown';
}

export class DraftPanel {
  readonly root = el('section', { class: 'draft', 'aria-label': 'Assistive draft',
    'data-testid': 'draft-panel', 'data-state': 'loading' });
  private readonly reason = el('p', { class: 'draft-reason', role: 'alert', 'data-testid': 'draft-reason', hidden: true });
  private readonly generator = el('p', { class: 'draft-generator', 'data-testid': 'draft-generator' });
  private readonly sentences = el('ol', { class: 'draft-sentences', 'data-testid': 'draft-sentences' });
  private readonly versions = el('ol', { class: 'draft-versions', 'data-testid': 'draft-versions' });
  private readonly text = el('textarea', { class: 'draft-text', rows: 6, 'aria-label': 'Draft text', hidden: true });
  private readonly message = el('p', { class: 'draft-message', role: 'status', 'data-testid': 'draft-message' });
  private readonly generateButton = el('button', { type: 'button', class: 'small', 'data-action': 'draft-generate' });
  private readonly editButton = el('button', { type: 'button', class: 'small', 'data-action': 'draft-edit', text: 'Edit' });
  private readonly saveButton = el('button', { type: 'button', class: 'small primary', 'data-action': 'draft-save', text: 'Save', hidden: true });
  private readonly cancelButton = el('button', { type: 'button', class: 'small', 'data-action': 'draft-cancel', text: 'Cancel', hidden: true });
  private readonly acceptButton = el('button', { type: 'button', class: 'small', 'data-action': 'draft-accept', text: 'Accept draft' });
  private current: Draft | null = null;
  private all: Draft[] = [];
  private failure = '';
  private busy = false;

  constructor(private readonly host: DraftHost) {
    this.generateButton.append('Generate draft ', kbd('T'));
    this.generateButton.addEventListener('click', () => void this.generate());
    this.editButton.addEventListener('click', () => this.edit(true));
    this.cancelButton.addEventListener('click', () => this.edit(false));
    this.saveButton.addEventListener('click', () => void this.save());
    this.acceptButton.addEventListener('click', () => void this.accept());
    this.root.append(
      el('div', { class: 'panel-head' }, el('h2', { text: 'Draft' }), this.generateButton),
      el('p', { class: 'assistive', 'data-testid': 'draft-assistive', text: ASSISTIVE }),
      this.reason, this.generator, this.sentences, this.text,
      el('div', { class: 'actions' }, this.editButton, this.saveButton, this.cancelButton, this.acceptButton),
      this.message, el('h3', { text: 'Versions' }), this.versions);
    this.draw();
  }

  async load(): Promise<void> {
    try {
      const state = await api.draft(this.host.studyId);
      this.all = state.versions;
      this.current = state.current;
      this.failure = state.llm_error;
    } catch (err) {
      this.message.textContent = err instanceof ApiError ? err.message : 'Cannot load the draft.';
    }
    this.draw();
  }

  async generate(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    this.message.textContent = 'Generating the draft…';
    this.draw();
    try {
      const reply = await api.generateDraft(this.host.studyId);
      this.message.textContent = reply.llm_failed ? '' : `Draft version ${reply.draft?.version ?? ''} generated.`;
      if (reply.llm_failed) this.failure = reply.llm_error || 'the drafter failed';
    } catch (err) {
      this.message.textContent = err instanceof ApiError ? err.message : 'Could not generate the draft.';
    } finally {
      this.busy = false;
    }
    await this.load();
  }

  private edit(on: boolean): void {
    this.text.hidden = !on;
    this.sentences.hidden = on;
    if (on) {
      this.text.value = this.current?.text ?? '';
      this.text.focus();
    }
    this.draw();
  }

  private async save(): Promise<void> {
    const draft = this.current;
    if (!draft || this.busy) return;
    await this.write(() => api.editDraft(this.host.studyId, { expected_version: draft.version, text: this.text.value }),
      (d) => `Saved as version ${d.version}.`, true);
  }

  private async accept(): Promise<void> {
    const draft = this.current;
    if (!draft || this.busy) return;
    await this.write(() => api.acceptDraft(this.host.studyId, { expected_version: draft.version }),
      (d) => `Draft accepted (version ${d.version}); it stays assistive text.`, false);
  }

  /** Runs a versioned write; a 409 reloads and names the current version, keeping the typed text. */
  private async write(op: () => Promise<Draft>, done: (d: Draft) => string, editing: boolean): Promise<void> {
    this.busy = true;
    let keepEditing = false;
    let note = '';
    try {
      const d = await op();
      note = done(d);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        keepEditing = editing;
        note = `${err.message}: someone changed the draft; the current version is shown, nothing was overwritten.`;
      } else {
        keepEditing = editing;
        note = err instanceof ApiError ? err.message : 'Could not save the draft.';
      }
    } finally {
      this.busy = false;
    }
    const typed = this.text.value;
    await this.load();
    if (keepEditing) { this.edit(true); this.text.value = typed; } else this.edit(false);
    this.message.textContent = note;
  }

  draw(): void {
    const d = this.current;
    const failed = this.failure !== '';
    const editing = !this.text.hidden;
    this.root.setAttribute('data-state', failed ? 'failed' : d ? d.status : 'none');
    this.root.classList.toggle('disabled', failed);
    this.root.setAttribute('aria-disabled', String(failed));
    this.reason.hidden = !failed;
    this.reason.textContent = failed
      ? `Draft unavailable: the last attempt failed (${this.failure}). The findings and their controls still work.`
      : '';
    this.generateButton.disabled = this.busy;
    this.generateButton.title = failed ? 'Try the drafter again' : 'Generate a new draft version';
    this.editButton.disabled = failed || !d || this.busy;
    this.editButton.hidden = editing;
    this.saveButton.hidden = !editing;
    this.cancelButton.hidden = !editing;
    this.saveButton.disabled = failed || this.busy;
    this.acceptButton.disabled = failed || !d || this.busy || editing || d.status === 'accepted';
    this.text.disabled = failed;
    this.generator.textContent = d ? `Written by: ${generatorLabel(d.generator)} · version ${d.version} (${d.status})` : 'No draft yet.';
    this.drawSentences(d);
    this.drawVersions();
  }

  private drawSentences(d: Draft | null): void {
    clear(this.sentences);
    if (!d) return;
    const byId = new Map(this.host.findings().map((f) => [f.id, f]));
    for (const s of d.sentences) {
      const li = el('li', { class: 'draft-sentence' }, el('span', { class: 'stext', text: s.text }));
      const refs = el('span', { class: 'refs' });
      if (s.finding_ids.length === 0) refs.append(el('span', { class: 'ref none', text: 'no finding' }));
      for (const id of s.finding_ids) {
        const f = byId.get(id);
        const ref = el('button', { type: 'button', class: 'small link finding-ref', 'data-finding-id': id,
          text: f ? currentLabel(f) : 'finding not shown', title: 'Select this finding' });
        ref.disabled = !f || this.failure !== '';
        if (f) ref.addEventListener('click', () => this.host.select(f));
        refs.append(ref);
      }
      li.append(refs);
      this.sentences.append(li);
    }
  }

  private drawVersions(): void {
    clear(this.versions);
    for (const v of [...this.all].reverse()) {
      this.versions.append(el('li', { class: v.version === this.current?.version ? 'current' : '',
        'data-version': v.version },
        `v${v.version} · ${v.status} · ${v.author} · ${formatDate(v.created_at)}`));
    }
  }
}
