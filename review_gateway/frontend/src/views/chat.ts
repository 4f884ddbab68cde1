// The assistive study chat: questions answered from the de-identified context, each sentence
// citing its findings ([F1]) or prior reports ([PRIOR-1]); keyboard first (C focuses, Enter sends).

import { api, ApiError, type ChatTurn } from '../api';
import { clear, el, kbd } from '../dom';

const ASSISTIVE = 'Assistive — not part of the report';
const UNAVAILABLE = 'The assistant is unavailable';
const MAX = 2000;

export class ChatPanel {
  readonly root = el('section', { class: 'chat', 'aria-label': 'Assistive chat', 'data-testid': 'chat-panel' });
  private readonly turns = el('ol', { class: 'chat-turns', 'data-testid': 'chat-turns', 'aria-live': 'polite' });
  private readonly input = el('textarea', { class: 'chat-input', rows: 2, maxlength: MAX,
    'aria-label': 'Ask about this study (Enter sends, Shift+Enter new line)', 'data-testid': 'chat-input' });
  private readonly message = el('p', { class: 'chat-message', role: 'status', 'data-testid': 'chat-message' });
  private busy = false;

  constructor(private readonly studyId: string) {
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); void this.send(); }
    });
    const head = el('div', { class: 'panel-head' }, el('h2', {}, 'Chat ', kbd('C')));
    this.root.append(head,
      el('p', { class: 'assistive', 'data-testid': 'chat-assistive', text: ASSISTIVE }),
      this.turns, this.input, this.message);
  }

  focus(): void { this.input.focus(); }

  async load(): Promise<void> {
    try {
      this.draw((await api.chat(this.studyId)).messages);
    } catch (err) {
      this.message.textContent = err instanceof ApiError ? err.message : 'Cannot load the chat.';
    }
  }

  async send(): Promise<void> {
    const text = this.input.value.trim();
    if (this.busy || !text) return;
    this.busy = true;
    this.input.disabled = true;
    this.message.textContent = 'Asking…';
    try {
      await api.ask(this.studyId, text);
      this.input.value = '';
      this.message.textContent = '';
    } catch (err) {
      const unavailable = err instanceof ApiError && (err.status === 503 || err.status === 504);
      this.message.textContent = unavailable ? `${UNAVAILABLE}: the review goes on without it.`
        : err instanceof ApiError ? err.message : UNAVAILABLE;
      this.root.dataset.state = unavailable ? 'unavailable' : 'error';
    } finally {
      this.busy = false;
      this.input.disabled = false;
      this.input.focus();
    }
    await this.load();
  }

  private draw(turns: ChatTurn[]): void {
    clear(this.turns);
    for (const t of turns) {
      const item = el('li', { class: `chat-turn ${t.role}`, 'data-role': t.role, 'data-testid': 'chat-turn' },
        el('p', { class: 'chat-text', text: t.text }));
      if (t.role === 'assistant') {
        const refs = t.citations.map((c) => `${c.ref} (${c.kind})`).join(', ');
        item.append(el('p', { class: 'chat-citations', 'data-testid': 'chat-citations',
          text: `Cites: ${refs || 'nothing'}${t.uncited_sentences ? ` · ${t.uncited_sentences} sentence(s) cite nothing` : ''}` }));
      }
      this.turns.append(item);
    }
  }
}
