// The findings panel: list, overlay toggles, per-finding decisions and their forms.

import { api, ApiError, conflictCurrent, REJECT_REASONS, type DecisionBody, type Finding } from '../api';
import { clear, el, kbd, percent } from '../dom';
import { currentLabel } from '../viewer/overlay';

const ACTION_TEXT: Record<string, string> = {
  accept: 'Accepted', reject: 'Rejected', edit_geometry: 'Box edited', edit_text: 'Wording edited',
  relabel: 'Relabelled', ignore: 'Ignored', include_in_draft: 'In draft',
  exclude_from_draft: 'Not in draft', add: 'Added',
};

export interface PanelHost {
  studyId: string;
  sliceNumber(f: Finding): number | null;
  select(f: Finding): void;
  overlaysChanged(): void;
  startDrawing(): void;
}

export class FindingsPanel {
  readonly root = el('section', { class: 'findings', 'aria-label': 'Findings' });
  private readonly list = el('ol', { class: 'finding-list' });
  private readonly editor = el('div', { class: 'editor' });
  readonly message = el('p', { class: 'message', role: 'status' });
  findings: Finding[] = [];
  visible = new Set<string>();
  selected: string | null = null;
  private allOn = true;

  constructor(private readonly host: PanelHost) {
    const all = el('button', { type: 'button', class: 'small', 'data-action': 'toggle-all' },
      'All overlays ', kbd('O'));
    all.addEventListener('click', () => this.toggleAll());
    const add = el('button', { type: 'button', class: 'small', 'data-action': 'add-own' },
      'Add finding ', kbd('N'));
    add.addEventListener('click', () => host.startDrawing());
    this.root.append(
      el('div', { class: 'panel-head' }, el('h2', { text: 'Findings' }), all, add),
      this.list, this.editor, this.message,
      el('p', { class: 'hints' }, kbd('J'), '/', kbd('K'), ' next/prev ', kbd('A'), ' accept ',
        kbd('R'), ' reject ', kbd('G'), ' ignore ', kbd('D'), ' draft ', kbd('E'), ' wording ',
        kbd('L'), ' relabel ', kbd('V'), ' overlay'));
  }

  setFindings(findings: Finding[]): void {
    const known = new Set(this.findings.map((f) => f.id));
    for (const f of findings) if (!known.has(f.id) && this.allOn) this.visible.add(f.id);
    this.findings = findings;
    this.draw();
  }

  get current(): Finding | undefined { return this.findings.find((f) => f.id === this.selected); }

  replace(f: Finding): void {
    const index = this.findings.findIndex((x) => x.id === f.id);
    if (index >= 0) this.findings[index] = f; else { this.findings.push(f); this.visible.add(f.id); }
    this.draw();
    this.host.overlaysChanged();
  }

  toggleAll(): void {
    this.allOn = !(this.findings.length > 0 && this.findings.every((f) => this.visible.has(f.id)));
    this.visible = new Set(this.allOn ? this.findings.map((f) => f.id) : []);
    void api.accessEvent(this.host.studyId, { type: 'overlay_toggled', visible: this.allOn }).catch(() => undefined);
    this.draw();
    this.host.overlaysChanged();
  }

  toggle(f: Finding): void {
    const on = !this.visible.has(f.id);
    if (on) this.visible.add(f.id); else this.visible.delete(f.id);
    void api.accessEvent(this.host.studyId, { type: 'overlay_toggled', finding_id: f.id, visible: on })
      .catch(() => undefined);
    this.draw();
    this.host.overlaysChanged();
  }

  step(delta: number): void {
    if (!this.findings.length) return;
    const index = this.findings.findIndex((f) => f.id === this.selected);
    const next = this.findings[(index + delta + this.findings.length) % this.findings.length];
    if (next) this.host.select(next);
  }

  async decide(f: Finding, body: Omit<DecisionBody, 'expected_version'>): Promise<boolean> {
    this.message.textContent = 'Saving…';
    try {
      const updated = await api.decide(this.host.studyId, f.id, { ...body, expected_version: f.version });
      this.replace(updated);
      this.message.textContent = `${ACTION_TEXT[body.action] ?? body.action}: ${currentLabel(updated)}`;
      return true;
    } catch (err) {
      const current = conflictCurrent(err);
      if (current) {
        this.replace(current);
        const d = current.decision;
        this.message.textContent = `Changed meanwhile: now version ${current.version}`
          + (d ? ` (latest decision: ${ACTION_TEXT[d.action] ?? d.action} by ${d.by})` : '')
          + '. Your change was not saved; review the current version and try again.';
        this.message.classList.add('conflict');
      } else {
        this.message.textContent = err instanceof ApiError ? err.message : 'Could not save.';
      }
      return false;
    }
  }

  /** Opens the form for reject / edit_text / relabel / own finding label. */
  form(kind: 'reject' | 'edit_text' | 'relabel' | 'own', f: Finding | null,
       submit?: (values: { label: string; text: string }) => void): void {
    clear(this.editor);
    this.message.classList.remove('conflict');
    const form = el('form', { class: `decision-form form-${kind}`, 'aria-label': kind });
    const cancel = el('button', { type: 'button', text: 'Cancel' });
    cancel.addEventListener('click', () => clear(this.editor));
    let first: HTMLElement | null = null;
    if (kind === 'reject') {
      const reason = el('select', { name: 'reason', 'aria-label': 'reason' });
      for (const [value, text] of REJECT_REASONS) reason.appendChild(el('option', { value, text }));
      const note = el('textarea', { name: 'note', rows: 2, maxlength: 2000, placeholder: 'Note (optional)' });
      form.append(el('label', { text: 'Reason ' }, reason), note);
      first = reason;
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        if (f) void this.decide(f, { action: 'reject', reason: reason.value, note: note.value })
          .then((ok) => { if (ok) clear(this.editor); });
      });
    } else {
      const label = el('input', { name: 'label', maxlength: 200, required: kind !== 'edit_text',
        placeholder: 'Label', value: f ? currentLabel(f) : '' });
      const text = el('textarea', { name: 'text', rows: 3, maxlength: 4000, placeholder: 'Wording' });
      text.value = f?.current?.text ?? f?.summary ?? '';
      if (kind !== 'edit_text') form.append(label);
      if (kind !== 'relabel') form.append(text);
      first = kind === 'edit_text' ? text : label;
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        if (submit) { submit({ label: label.value.trim(), text: text.value }); clear(this.editor); return; }
        if (!f) return;
        const body: Omit<DecisionBody, 'expected_version'> = kind === 'relabel'
          ? { action: 'relabel', label: label.value.trim() } : { action: 'edit_text', text: text.value };
        void this.decide(f, body).then((ok) => { if (ok) clear(this.editor); });
      });
    }
    form.append(el('button', { type: 'submit', text: kind === 'reject' ? 'Reject' : 'Save' }), cancel);
    this.editor.appendChild(form);
    first?.focus();
  }

  closeForm(): boolean {
    const open = this.editor.firstChild !== null;
    clear(this.editor);
    return open;
  }

  draw(): void {
    clear(this.list);
    if (!this.findings.length) {
      this.list.appendChild(el('li', { class: 'empty', text: 'No findings (AI may still be running).' }));
    }
    for (const f of this.findings) {
      const slice = this.host.sliceNumber(f);
      const d = f.decision;
      const toggle = el('input', { type: 'checkbox', 'aria-label': 'show overlay',
        ...(this.visible.has(f.id) ? { checked: true } : {}) });
      toggle.addEventListener('click', (e) => { e.stopPropagation(); this.toggle(f); });
      const draft = f.current?.include_in_draft ? el('span', { class: 'tag', text: 'draft' }) : null;
      const item = el('li', { class: `finding-item${f.id === this.selected ? ' selected' : ''}`,
          'data-finding-id': f.id, tabindex: 0 },
        el('div', { class: 'line1' }, toggle,
          el('span', { class: 'flabel', text: currentLabel(f) }),
          el('span', { class: 'conf', text: f.origin === 'radiologist' ? 'own' : percent(f.confidence) })),
        el('div', { class: 'line2' },
          el('span', { text: f.origin === 'radiologist' ? `by ${d?.by ?? 'radiologist'}`
            : f.model ? `${f.model.name} ${f.model.version}` : '' }),
          el('span', { text: f.kind }),
          el('span', { class: 'slice', text: slice ? `slice ${slice}` : '' })),
        el('div', { class: 'line3' },
          el('span', { class: `decision d-${d?.action ?? 'none'}`,
            text: d ? ACTION_TEXT[d.action] ?? d.action : 'No decision' }),
          d?.reason ? el('span', { class: 'reason', text: d.reason.replaceAll('_', ' ') }) : null,
          d?.note ? el('span', { class: 'note', text: d.note }) : null, draft),
        f.current?.text ? el('div', { class: 'text', text: f.current.text }) : null);
      item.addEventListener('click', () => this.host.select(f));
      if (f.id === this.selected) {
        const actions = el('div', { class: 'actions' });
        const button = (text: string, key: string, action: () => void): void => {
          const b = el('button', { type: 'button', class: 'small', 'data-action': text.toLowerCase() },
            `${text} `, kbd(key));
          b.addEventListener('click', (e) => { e.stopPropagation(); action(); });
          actions.appendChild(b);
        };
        button('Accept', 'A', () => void this.decide(f, { action: 'accept' }));
        button('Reject', 'R', () => this.form('reject', f));
        button('Ignore', 'G', () => void this.decide(f, { action: 'ignore' }));
        button(f.current?.include_in_draft ? 'Exclude' : 'Draft', 'D', () => void this.decide(f,
          { action: f.current?.include_in_draft ? 'exclude_from_draft' : 'include_in_draft' }));
        button('Wording', 'E', () => this.form('edit_text', f));
        button('Relabel', 'L', () => this.form('relabel', f));
        item.appendChild(actions);
      }
      this.list.appendChild(item);
    }
  }
}
