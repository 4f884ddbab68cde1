// The worklist: filters, sort, paging, claim/release and live updates over server-sent events.

import { api, ApiError, type Study, type StudyEvent } from '../api';
import { clear, el, formatDate, kbd, percent, typing } from '../dom';
import { DEFAULT_QUERY, store, type WorklistQuery } from '../store';
import { header } from './header';

const STATES = ['', 'received', 'ready_for_review', 'assigned', 'in_review', 'reviewed',
                'ai_failed', 'ineligible'];
const MODALITIES = ['', 'CT', 'MR', 'MG', 'CR', 'DX'];
const AI_STATUSES: [string, string][] = [['', 'any'], ['pending', 'pending'],
  ['findings', 'findings'], ['no_findings', 'no findings'], ['failed', 'failed']];
const AI_TEXT: Record<string, string> = { pending: 'AI pending', findings: 'Findings',
  no_findings: 'No findings', failed: 'AI failed' };
const SORTABLE: Record<string, string> = { received: 'received_at', date: 'study_date',
  confidence: 'max_confidence' };

export function patientName(study: Study): string {
  const p = study.patient;
  if (!p) return '';
  // The PN groups (alphabetic, ideographic, phonetic) joined as DICOM writes them.
  const groups = [p.name, p.name_ideographic ?? '', p.name_phonetic ?? ''];
  while (groups.length > 1 && !groups[groups.length - 1]) groups.pop();
  return groups.map((g) => g.replaceAll('^', ' ').trim()).join('=');
}

function select(name: string, options: [string, string][], value: string): HTMLSelectElement {
  const node = el('select', { name, id: `f-${name}`, 'aria-label': name });
  for (const [v, label] of options) node.appendChild(el('option', { value: v, text: label || 'any' }));
  node.value = value;
  return node;
}

export function renderWorklist(root: HTMLElement, navigate: (hash: string) => void): () => void {
  const query = store.get().worklist;
  const rows = new Map<string, { study: Study; tr: HTMLTableRowElement }>();
  let order: string[] = [];
  let selected = 0;
  const status = el('p', { class: 'status', role: 'status' });
  const tbody = el('tbody');
  const pageInfo = el('span', { class: 'page' });
  const prev = el('button', { type: 'button', text: '‹ Previous' });
  const next = el('button', { type: 'button', text: 'Next ›' });
  let nextToken = '';

  const filters = el('form', { class: 'filters', 'aria-label': 'Filters' },
    el('label', { text: 'State ' }, select('state', STATES.map((s) => [s, s]), query.state)),
    el('label', { text: 'Modality ' }, select('modality', MODALITIES.map((m) => [m, m]), query.modality)),
    el('label', { text: 'AI ' }, select('ai_status', AI_STATUSES, query.ai_status)),
    el('label', { text: 'From ' }, el('input', { type: 'date', name: 'date_from', value: query.date_from })),
    el('label', { text: 'To ' }, el('input', { type: 'date', name: 'date_to', value: query.date_to })),
    el('label', { class: 'check' }, el('input', { type: 'checkbox', name: 'assigned',
      ...(query.assigned === 'me' ? { checked: true } : {}) }), ' Assigned to me'),
    el('button', { type: 'reset', text: 'Clear' }));
  filters.addEventListener('change', () => {
    const data = new FormData(filters);
    const patch: Partial<WorklistQuery> = {};
    for (const key of ['state', 'modality', 'ai_status', 'date_from', 'date_to'] as const) {
      patch[key] = String(data.get(key) ?? '');
    }
    patch.assigned = data.get('assigned') ? 'me' : '';
    restart(patch);
  });
  filters.addEventListener('reset', () => setTimeout(() => {
    searchBox.value = '';
    restart({ ...DEFAULT_QUERY });
  }, 0));

  // Patient search, answered by the server (facility-scoped and audited there): a name in
  // any order and any case or accents, a patient ID or an accession number.
  const searchBox = el('input', { type: 'search', name: 'q', id: 'f-q', maxlength: 64,
    value: query.q, placeholder: 'Patient name, patient ID or accession',
    'aria-label': 'Search patient name, patient ID or accession', autocomplete: 'off' });
  const search = el('form', { class: 'search', role: 'search', 'aria-label': 'Search' },
    searchBox, el('button', { type: 'submit', text: 'Search' }), kbd('/'));
  let searchTimer = 0;
  const runSearch = (): void => {
    window.clearTimeout(searchTimer);
    const q = searchBox.value.trim();
    if (q !== store.get().worklist.q) restart({ q });
  };
  search.addEventListener('submit', (e) => { e.preventDefault(); runSearch(); });
  searchBox.addEventListener('input', () => {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(runSearch, 500);
  });

  function restart(patch: Partial<WorklistQuery>): void {
    store.set({ worklist: { ...store.get().worklist, ...patch }, pages: [], pageToken: '' });
    void load();
  }

  function sortHeader(text: string, key: string): HTMLElement {
    const field = SORTABLE[key] as string;
    const current = store.get().worklist.sort;
    const mark = current === field ? ' ▲' : current === `-${field}` ? ' ▼' : '';
    const button = el('button', { type: 'button', class: 'sort', text: text + mark,
      'aria-label': `sort by ${text}` });
    button.addEventListener('click', () => {
      restart({ sort: current === `-${field}` ? field : `-${field}` });
    });
    return el('th', {}, button);
  }

  const thead = el('thead');
  function renderHead(): void {
    clear(thead);
    thead.appendChild(el('tr', {},
      el('th', { text: 'Patient' }), el('th', { text: 'Accession' }), el('th', { text: 'Mod.' }),
      el('th', { text: 'Description' }), sortHeader('Study date', 'date'),
      sortHeader('Received', 'received'), el('th', { text: 'State' }), el('th', { text: 'AI' }),
      el('th', { text: 'Findings' }), sortHeader('Max conf.', 'confidence'),
      el('th', { text: 'Assigned' }), el('th', { text: '' })));
  }

  function row(study: Study): HTMLTableRowElement {
    const me = store.get().me?.username ?? '';
    const ai = study.ai_status || 'pending';
    const claim = study.assigned_to === me
      ? el('button', { type: 'button', class: 'small', text: 'Release', onclick: (e: Event) => {
          e.stopPropagation(); void act(study.id, 'release'); } })
      : el('button', { type: 'button', class: 'small', text: 'Claim',
          disabled: Boolean(study.assigned_to), onclick: (e: Event) => {
            e.stopPropagation(); void act(study.id, 'claim'); } });
    const tr = el('tr', { 'data-study-id': study.id, tabindex: -1 },
      el('td', { class: 'patient' }, el('span', { class: 'name', text: patientName(study) }),
        el('span', { class: 'pid', text: study.patient?.id ?? '' })),
      el('td', { text: study.accession }),
      el('td', { text: study.modality }),
      el('td', { text: study.description ?? '' }),
      el('td', { text: study.study_date ?? '' }),
      el('td', { text: formatDate(study.received_at) }),
      el('td', {}, el('span', { class: `state s-${study.state}`, text: study.state.replaceAll('_', ' ') })),
      el('td', {}, el('span', { class: `ai ai-${ai}`, text: AI_TEXT[ai] ?? ai })),
      el('td', { class: 'num findings', text: ai === 'pending' ? '–' : String(study.finding_count ?? 0) }),
      el('td', { class: 'num', text: percent(study.max_confidence) }),
      el('td', { text: study.assigned_to ?? '' }),
      el('td', {}, claim));
    tr.addEventListener('click', () => navigate(`#/study/${study.id}`));
    return tr;
  }

  function draw(): void {
    clear(tbody);
    order.forEach((id, index) => {
      const entry = rows.get(id);
      if (!entry) return;
      entry.tr = row(entry.study);
      if (index === selected) entry.tr.classList.add('selected');
      tbody.appendChild(entry.tr);
    });
    if (!order.length) {
      tbody.appendChild(el('tr', {}, el('td', { colspan: 12, class: 'empty',
        text: 'No studies match.' })));
    }
  }

  async function act(id: string, what: 'claim' | 'release'): Promise<void> {
    try {
      const study = await (what === 'claim' ? api.claim(id) : api.release(id));
      const entry = rows.get(id);
      if (entry) { entry.study = { ...entry.study, ...study }; draw(); }
      status.textContent = what === 'claim' ? 'Claimed.' : 'Released.';
    } catch (err) {
      status.textContent = err instanceof ApiError ? err.message : 'Request failed.';
    }
  }

  let loading = 0;
  async function load(): Promise<void> {
    const ticket = ++loading;
    const s = store.get();
    renderHead();
    status.textContent = 'Loading…';
    try {
      const reply = await api.studies({ ...s.worklist, page_token: s.pageToken });
      if (ticket !== loading) return;
      rows.clear();
      for (const study of reply.studies) rows.set(study.id, { study, tr: row(study) });
      order = reply.studies.map((st) => st.id);
      selected = Math.min(selected, Math.max(order.length - 1, 0));
      nextToken = reply.next_page_token;
      next.disabled = !nextToken;
      prev.disabled = !s.pages.length;
      pageInfo.textContent = `Page ${s.pages.length + 1}`;
      status.textContent = `${order.length} studies${nextToken ? ' (more on the next page)' : ''}`;
      draw();
    } catch (err) {
      if (ticket === loading) status.textContent = err instanceof ApiError ? err.message : 'Cannot load the worklist.';
    }
  }
  next.addEventListener('click', () => {
    const s = store.get();
    store.set({ pages: [...s.pages, s.pageToken], pageToken: nextToken });
    void load();
  });
  prev.addEventListener('click', () => {
    const pages = [...store.get().pages];
    store.set({ pageToken: pages.pop() ?? '', pages });
    void load();
  });

  // Live updates: a known row changes in place; an unknown study reloads the page's rows.
  let reloadTimer = 0;
  const events = new EventSource(api.eventsUrl, { withCredentials: true });
  events.addEventListener('study', (message: MessageEvent<string>) => {
    let change: StudyEvent;
    try { change = JSON.parse(message.data) as StudyEvent; } catch { return; }
    const entry = rows.get(change.id);
    if (entry) {
      entry.study = { ...entry.study, ...change };
      draw();
    } else {
      window.clearTimeout(reloadTimer);
      reloadTimer = window.setTimeout(() => void load(), 300);
    }
  });

  function onKey(event: KeyboardEvent): void {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const id = order[selected];
    if (event.key === '/') { event.preventDefault(); searchBox.focus(); return; }
    if (event.key === 'j' || event.key === 'ArrowDown') selected = Math.min(selected + 1, order.length - 1);
    else if (event.key === 'k' || event.key === 'ArrowUp') selected = Math.max(selected - 1, 0);
    else if (event.key === 'Enter' && id) { navigate(`#/study/${id}`); return; }
    else if (event.key === 'c' && id) { void act(id, 'claim'); return; }
    else if (event.key === 'u' && id) { void act(id, 'release'); return; }
    else if (event.key === 'r') { void load(); return; }
    else return;
    event.preventDefault();
    draw();
    rows.get(order[selected] ?? '')?.tr.scrollIntoView({ block: 'nearest' });
  }
  document.addEventListener('keydown', onKey);

  root.appendChild(el('div', { class: 'page-worklist' },
    header(navigate),
    el('section', { class: 'toolbar' }, search, filters),
    el('p', { class: 'hints' }, kbd('/'), ' search ', kbd('J'), '/', kbd('K'), ' move ', kbd('Enter'), ' open ',
      kbd('C'), ' claim ', kbd('U'), ' release ', kbd('R'), ' refresh'),
    el('table', { class: 'worklist', 'aria-label': 'Worklist' }, thead, tbody),
    el('nav', { class: 'paging' }, prev, pageInfo, next, status)));
  void load();
  return () => {
    events.close();
    window.clearTimeout(reloadTimer);
    window.clearTimeout(searchTimer);
    document.removeEventListener('keydown', onKey);
  };
}
