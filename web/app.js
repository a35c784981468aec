// SoTalk web client: wallet sign-in, conversations, live chat. Plain ES modules, no build step.

import { SoTalkClient } from '../client/index.js';
import { createApi, describeError, SoTalkError } from './api.js';
import { isWalletAddress } from './base58.js';
import { ed25519Supported, exportJwk, exportSecretBase58, generateWallet, importWallet, signText } from './wallet.js';

const WALLETS_KEY = 'sotalk.wallets.v1'; // every wallet made or imported in this browser (localStorage)
const SESSION_KEY = 'sotalk.session.v1'; // this tab's signed-in wallet and token (sessionStorage)
const PAGE_SIZE = 50;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ state

const state = {
  wallet: null, // {address, jwk, created_at}
  session: null, // {address, token, expires_at}
  me: null, // user object
  users: new Map(), // user id → user
  conversations: new Map(), // id → conversation list item (with last_message, unread_count)
  order: [], // conversation ids, most recent activity first
  nextCursor: null,
  current: null, // the open conversation, see openConversation()
  client: null, // SoTalkClient of the signed-in wallet (renews its token by itself)
  live: null, // its LiveConnection
  wasLive: false, // the live connection has been up before (a later 'live' is a reconnect)
  atRest: false, // the server exposes the "at rest" endpoint
  typing: new Map(), // conversation id → Map(user id → expiry ms)
  sending: Promise.resolve(), // the send in progress; the next one waits for it
  alertIsConnectivity: false, // the alert shown is about the server being unreachable
};

const api = createApi(() => state.client);

/**
 * A client for a wallet record of this browser; `session` resumes a token from this tab. Only a
 * sign-in text naming this wallet is ever signed, whatever a server might send.
 */
function clientFor(record, session) {
  const wallet = {
    address: record.address,
    sign: async (text) => {
      if (!text.includes(record.address)) throw new Error('the server asked to sign an unexpected text; refusing');
      return signText(record, text);
    },
  };
  const client = new SoTalkClient({ baseUrl: location.origin, wallet, session });
  client.onSession((s) => {
    state.session = { address: record.address, token: s.token, expires_at: new Date(s.expiresAt).toISOString() };
    saveSession(state.session);
  });
  return client;
}

// ------------------------------------------------------------------ small helpers

/** Creates an element; text always goes through textContent, never HTML. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) if (child != null && child !== false) el.append(child);
  return el;
}

const shortAddress = (address) => (address ? `${address.slice(0, 4)}…${address.slice(-4)}` : '');

function userName(id, { you = 'You' } = {}) {
  if (id === state.me?.id) return you;
  const user = state.users.get(id);
  return user?.display_name || shortAddress(user?.wallet) || 'Someone';
}

function avatarFor(el, name, seed) {
  let hash = 0;
  for (const c of seed ?? name) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  el.textContent = ([...name.replace(/^[^\p{L}\p{N}]+/u, '')][0] ?? '?').toUpperCase();
  el.style.setProperty('--hue', String(hash % 360));
}

function formatTime(iso, { withDay = false } = {}) {
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  if (withDay && !sameDay) return date.toLocaleDateString([], { month: 'short', day: 'numeric' });
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function announce(text) {
  const el = $('announce');
  el.textContent = '';
  requestAnimationFrame(() => (el.textContent = text));
}

/** Shows an API or client error where the user is looking: the open dialog, else the alert bar. */
function showError(action, err) {
  const text = describeError(action, err);
  console.warn(text, err);
  const dialog = document.querySelector('dialog[open]');
  const target = dialog?.querySelector('.dialog-error');
  if (target) {
    target.textContent = text;
    target.hidden = false;
    const field = err?.field && dialog.querySelector(`[name="${CSS.escape(err.field)}"]`);
    if (field) {
      field.setAttribute('aria-invalid', 'true');
      field.setAttribute('aria-describedby', target.id);
      field.focus();
    }
    return;
  }
  $('alert-text').textContent = text;
  $('alert').hidden = false;
  state.alertIsConnectivity = ['network', 'timeout', 'unavailable'].includes(err?.code);
}

function clearErrors() {
  $('alert').hidden = true;
  $('alert-text').textContent = '';
  for (const el of document.querySelectorAll('.dialog-error')) {
    el.hidden = true;
    el.textContent = '';
  }
  for (const el of document.querySelectorAll('[aria-invalid]')) {
    el.removeAttribute('aria-invalid');
    el.removeAttribute('aria-describedby');
  }
}

/** Disables a button while `work` runs, so a double click does not do things twice. */
async function busy(button, work) {
  if (button) button.disabled = true;
  try {
    return await work();
  } finally {
    if (button) button.disabled = false;
  }
}

// ------------------------------------------------------------------ storage

function loadWallets() {
  try {
    const list = JSON.parse(localStorage.getItem(WALLETS_KEY) ?? '[]');
    return Array.isArray(list) ? list.filter((w) => typeof w?.address === 'string' && w.jwk?.d) : [];
  } catch {
    return [];
  }
}

function saveWallet(record) {
  const list = loadWallets().filter((w) => w.address !== record.address);
  localStorage.setItem(WALLETS_KEY, JSON.stringify([...list, record]));
}

function forgetWallet(address) {
  localStorage.setItem(WALLETS_KEY, JSON.stringify(loadWallets().filter((w) => w.address !== address)));
}

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null');
  } catch {
    return null;
  }
}

function saveSession(session) {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
}

// ------------------------------------------------------------------ sign-in

function showSignIn() {
  $('app-view').hidden = true;
  $('signin-view').hidden = false;
  document.title = 'Sign in · SoTalk';
  const wallets = loadWallets();
  $('no-wallets').hidden = wallets.length > 0;
  $('wallet-list').replaceChildren(
    ...wallets.map((w) => {
      const label = w.label ? `${w.label} (${shortAddress(w.address)})` : shortAddress(w.address);
      const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true' });
      avatarFor(avatar, w.label || w.address, w.address);
      return h(
        'li',
        {},
        avatar,
        h('span', { class: 'wallet-label' }, h('strong', { text: w.label || 'Wallet' }), h('code', { class: 'address', text: w.address })),
        h('button', { type: 'button', class: 'primary', 'aria-label': `Sign in as ${label}`, onclick: (e) => signInWith(w, e.currentTarget) }, 'Sign in'),
        h('button', {
          type: 'button',
          class: 'small-button quiet',
          'aria-label': `Forget wallet ${label}`,
          onclick: () => {
            if (!confirm(`Forget wallet ${label} in this browser? Without an exported copy of its key you cannot sign in as it again.`)) return;
            forgetWallet(w.address);
            showSignIn();
          },
        }, 'Forget'),
      );
    }),
  );
}

async function signInWith(record, button) {
  clearErrors();
  await busy(button, async () => {
    try {
      state.client?.close();
      state.client = clientFor(record);
      const res = await state.client.signIn();
      saveWallet({ ...record, label: res.user.display_name ?? record.label });
      state.wallet = record;
      state.me = res.user;
      await enterApp();
      if (!state.current) $('chats-heading').focus();
      announce(`Signed in as ${res.user.display_name || shortAddress(res.user.wallet)}`);
    } catch (err) {
      showError('Sign-in failed', err);
    }
  });
}

function signOut(reason) {
  state.live?.close();
  state.live = null;
  state.client?.close();
  state.client = null;
  state.wasLive = false;
  state.session = null;
  state.wallet = null;
  state.me = null;
  state.current = null;
  state.conversations.clear();
  state.order = [];
  state.users.clear();
  state.typing.clear();
  saveSession(null);
  listItems.clear();
  $('conversation-list').replaceChildren();
  $('message-list').replaceChildren();
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  if (location.hash) history.replaceState(null, '', location.pathname);
  document.body.classList.remove('chat-open');
  showSignIn();
  if (reason) showError('Signed out', new Error(reason));
}

// ------------------------------------------------------------------ the app

async function enterApp() {
  $('signin-view').hidden = true;
  $('app-view').hidden = false;
  renderMe();
  // The library's live connection: every new message once and in order (caught up from history
  // after a reconnect), other events as they come.
  const live = state.client.live();
  state.live = live;
  live.on('state', (liveState) => {
    const reconnected = liveState === 'live' && state.wasLive;
    if (liveState === 'live') state.wasLive = true;
    if (liveState !== 'closed') onSocketState(liveState, reconnected);
  });
  live.on('event', (frame) => frame.type !== 'new_message' && onFrame(frame));
  void live.start().catch((err) => showError('Could not connect live', err));
  void (async () => {
    for await (const message of live) onFrame({ type: 'new_message', message });
  })();
  await Promise.all([
    loadFeatures(),
    loadConversations(true).catch((err) => showError('Could not load your conversations', err)),
  ]);
  await route();
}

function renderMe() {
  const me = state.me;
  const name = me.display_name || shortAddress(me.wallet);
  $('me-name').textContent = name;
  $('profile-button').setAttribute('aria-label', `Your profile: ${name}`);
  avatarFor($('me-avatar'), name, me.id);
  $('my-address').textContent = me.wallet;
  $('my-address').dataset.wallet = me.wallet;
  state.users.set(me.id, me);
}

/** Optional endpoints the server offers (the at-rest panel only with SOTALK_AT_REST_PANEL=true). */
async function loadFeatures() {
  try {
    const { features } = await api.get('/features');
    state.atRest = features.at_rest_panel === true;
  } catch {
    state.atRest = false;
  }
  document.body.classList.toggle('at-rest-on', state.atRest);
}

function onSocketState(socketState, reconnected) {
  const el = $('conn');
  el.dataset.state = socketState;
  el.textContent = socketState === 'live' ? 'Live' : socketState === 'connecting' ? 'Connecting…' : 'Offline, retrying…';
  el.title = socketState === 'live' ? 'Connected: messages arrive as they are sent' : 'Not connected: messages are sent over HTTP until the connection is back';
  if (socketState === 'live' && reconnected) {
    if (state.alertIsConnectivity) clearErrors();
    announce('Connected again');
    void catchUpAll();
    const view = state.current;
    for (const pending of view?.pending.values() ?? []) if (pending.failed && pending.retryable) retrySend(view, pending);
  }
}

/** After a reconnect: events may have been missed, history is authoritative. */
async function catchUpAll() {
  try {
    await loadConversations(true);
    if (state.current?.conversation) await catchUp(state.current);
  } catch (err) {
    showError('Could not refresh after reconnecting', err);
  }
}

async function resolveUsers(ids) {
  const missing = [...new Set(ids)].filter((id) => id && !state.users.has(id));
  await Promise.all(
    missing.map(async (id) => {
      try {
        state.users.set(id, (await api.get(`/users/${id}`)).user);
      } catch {
        state.users.set(id, { id, wallet: '', display_name: null });
      }
    }),
  );
}

// ------------------------------------------------------------------ conversation list

const activityOf = (c) => Date.parse(c.last_message?.created_at ?? c.created_at);

/** Avatar colour: a direct chat takes the other person's, so everyone sees them in the same colour. */
function avatarSeed(c) {
  return c.type === 'direct' ? (c.members.find((m) => m.user_id !== state.me.id)?.user_id ?? c.id) : c.id;
}

function conversationTitle(c) {
  const others = c.members.filter((m) => m.user_id !== state.me.id).map((m) => userName(m.user_id));
  if (c.type === 'group') return c.title || (others.length ? others.slice(0, 3).join(', ') : 'Group');
  return others[0] ?? 'Only you';
}

async function loadConversations(reset) {
  const cursor = !reset && state.nextCursor ? `&before=${encodeURIComponent(state.nextCursor)}` : '';
  const page = await api.get(`/conversations?limit=30${cursor}`);
  await resolveUsers(page.conversations.flatMap((c) => c.members.map((m) => m.user_id)));
  if (reset) {
    // keep the open conversation even when it is beyond the first page
    const keep = state.current ? state.conversations.get(state.current.id) : undefined;
    state.conversations.clear();
    if (keep) state.conversations.set(keep.id, keep);
  }
  for (const c of page.conversations) state.conversations.set(c.id, c);
  state.nextCursor = page.next_cursor;
  sortConversations();
  renderConversationList();
}

function sortConversations() {
  state.order = [...state.conversations.values()].sort((a, b) => activityOf(b) - activityOf(a)).map((c) => c.id);
}

let refreshTimer = 0;
function scheduleListRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => loadConversations(true).catch((err) => showError('Could not refresh your conversations', err)), 150);
}

function typingNames(conversationId) {
  const map = state.typing.get(conversationId);
  if (!map) return [];
  const now = Date.now();
  return [...map].filter(([, until]) => until > now).map(([id]) => userName(id));
}

function previewOf(c) {
  const typing = typingNames(c.id);
  if (typing.length) return { text: typing.length === 1 && c.type === 'direct' ? 'typing…' : `${typing.join(', ')} typing…`, typing: true };
  const m = c.last_message;
  if (!m) return { text: c.type === 'group' ? `Group with ${c.members.length} member${c.members.length === 1 ? '' : 's'}` : 'No messages yet' };
  const who = m.sender_id === state.me.id ? 'You: ' : c.type === 'group' ? `${userName(m.sender_id)}: ` : '';
  const body = m.deleted ? 'Message deleted' : m.content === null ? 'Message could not be decrypted' : m.content;
  return { text: who + body.replace(/\s+/g, ' ') };
}

const listItems = new Map(); // conversation id → <li>

function renderConversationList() {
  const list = $('conversation-list');
  const currentId = state.current?.id;
  for (const [id, li] of listItems) {
    if (!state.conversations.has(id)) {
      li.remove();
      listItems.delete(id);
    }
  }
  state.order.forEach((id, index) => {
    const c = state.conversations.get(id);
    let li = listItems.get(id);
    if (!li) {
      li = h('li', {}, h('a', { class: 'conversation', href: `#/c/${id}` }));
      listItems.set(id, li);
    }
    const title = conversationTitle(c);
    const preview = previewOf(c);
    const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true' });
    avatarFor(avatar, title, avatarSeed(c));
    const link = li.firstChild;
    link.replaceChildren(
      avatar,
      h(
        'span',
        { class: 'conversation-text' },
        h('span', { class: 'conversation-title', text: title }),
        h('span', { class: `conversation-preview${preview.typing ? ' typing-preview' : ''}`, text: preview.text }),
      ),
      h(
        'span',
        { class: 'conversation-side' },
        h('time', { datetime: c.last_message?.created_at ?? c.created_at, text: formatTime(c.last_message?.created_at ?? c.created_at, { withDay: true }) }),
        c.unread_count > 0 && id !== currentId
          ? h('span', { class: 'badge' }, String(c.unread_count), h('span', { class: 'visually-hidden', text: ` unread message${c.unread_count === 1 ? '' : 's'}` }))
          : null,
      ),
    );
    if (id === currentId) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] ?? null);
  });
  $('no-conversations').hidden = state.order.length > 0;
  $('more-conversations').hidden = !state.nextCursor;
  const unread = [...state.conversations.values()].reduce((n, c) => n + (c.id === currentId ? 0 : c.unread_count), 0);
  document.title = unread > 0 ? `(${unread}) SoTalk` : 'SoTalk';
}

// ------------------------------------------------------------------ routing

async function route() {
  const match = /^#\/c\/([0-9a-f-]{36})$/i.exec(location.hash);
  if (!state.me) return;
  if (match) await openConversation(match[1].toLowerCase());
  else closeConversation();
}

function closeConversation() {
  state.current = null;
  document.body.classList.remove('chat-open');
  $('chat-main').hidden = true;
  $('chat-empty').hidden = false;
  $('message-list').replaceChildren();
  renderConversationList();
}

// ------------------------------------------------------------------ one conversation

function newView(id) {
  return {
    id,
    conversation: null, // full conversation (members with receipts)
    messages: [], // ascending seq
    byId: new Map(),
    elements: new Map(), // message id or pending key → <li>
    pending: new Map(), // client_message_id → pending message
    early: [], // events that arrived while the first page loaded
    hasMore: false,
    loadingOlder: false,
    readSent: 0,
    editing: null, // message id
    confirmingDelete: null,
    atRestOpen: new Set(),
    lastTypingSent: 0,
  };
}

async function openConversation(id) {
  if (state.current?.id === id) return;
  const view = newView(id);
  state.current = view;
  document.body.classList.add('chat-open');
  $('chat-empty').hidden = true;
  $('chat-main').hidden = false;
  $('message-list').replaceChildren();
  $('typing').textContent = '';
  $('load-older').hidden = true;
  $('history-start').hidden = true;
  const known = state.conversations.get(id);
  if (known) renderChatHeader(known);
  else $('chat-title').textContent = 'Loading…';
  renderConversationList();
  try {
    const [{ conversation }, page] = await Promise.all([
      api.get(`/conversations/${id}`),
      api.get(`/conversations/${id}/messages?limit=${PAGE_SIZE}`),
    ]);
    await resolveUsers([...conversation.members.map((m) => m.user_id), ...page.messages.map((m) => m.sender_id)]);
    if (state.current !== view) return;
    view.conversation = conversation;
    if (!state.conversations.has(id)) {
      state.conversations.set(id, { ...conversation, last_message: page.messages.at(-1) ?? null, unread_count: 0 });
      sortConversations();
    }
    renderChatHeader(conversation);
    for (const m of page.messages) upsertMessage(view, m);
    view.hasMore = page.has_more;
    for (const m of view.early.splice(0)) upsertMessage(view, m);
    renderOlderControls(view);
    scrollToBottom(true);
    markRead(view);
    renderConversationList();
    if (matchMedia('(min-width: 721px)').matches) $('composer-input').focus();
    void fillViewport(view);
  } catch (err) {
    if (state.current !== view) return;
    showError('Cannot open this conversation', err);
    if (err instanceof SoTalkError && err.status === 404) {
      state.conversations.delete(id);
      sortConversations();
      location.hash = '#/';
    }
  }
}

function renderChatHeader(c) {
  const title = conversationTitle(c);
  $('chat-title').textContent = title;
  avatarFor($('chat-avatar'), title, avatarSeed(c));
  if (c.type === 'direct') {
    const other = c.members.find((m) => m.user_id !== state.me.id);
    const wallet = other ? state.users.get(other.user_id)?.wallet : '';
    $('chat-subtitle').textContent = wallet ? `Direct · ${shortAddress(wallet)}` : 'Direct';
    $('chat-subtitle').title = wallet ?? '';
  } else {
    const names = c.members.map((m) => userName(m.user_id));
    $('chat-subtitle').textContent = `${c.members.length} member${c.members.length === 1 ? '' : 's'}: ${names.join(', ')}`;
    $('chat-subtitle').title = '';
  }
  $('chat-key').textContent = `AES-256-GCM · key v${c.current_key_version}`;
}

function renderOlderControls(view) {
  $('load-older').hidden = !view.hasMore;
  $('load-older').disabled = view.loadingOlder;
  $('load-older').textContent = view.loadingOlder ? 'Loading older messages…' : 'Load older messages';
  $('history-start').hidden = view.hasMore || view.messages.length === 0;
}

const messagesBox = () => $('messages');

function isNearBottom() {
  const box = messagesBox();
  return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
}

function scrollToBottom(force) {
  const box = messagesBox();
  if (force || isNearBottom()) box.scrollTop = box.scrollHeight;
}

/** Loads older pages while the list does not fill the screen (no scroll bar to scroll up with). */
async function fillViewport(view) {
  const box = messagesBox();
  while (state.current === view && view.hasMore && box.scrollHeight <= box.clientHeight + 40) {
    if (!(await loadOlder(view))) break;
  }
}

async function loadOlder(view) {
  if (!view.hasMore || view.loadingOlder || view.messages.length === 0) return false;
  view.loadingOlder = true;
  renderOlderControls(view);
  const list = $('message-list');
  list.setAttribute('aria-busy', 'true');
  const box = messagesBox();
  try {
    const page = await api.get(`/conversations/${view.id}/messages?limit=${PAGE_SIZE}&before_seq=${view.messages[0].seq}`);
    await resolveUsers(page.messages.map((m) => m.sender_id));
    if (state.current !== view) return false;
    const fromBottom = box.scrollHeight - box.scrollTop;
    for (const m of page.messages) upsertMessage(view, m);
    view.hasMore = page.has_more;
    box.scrollTop = box.scrollHeight - fromBottom;
    return true;
  } catch (err) {
    showError('Could not load older messages', err);
    return false;
  } finally {
    view.loadingOlder = false;
    list.removeAttribute('aria-busy');
    if (state.current === view) renderOlderControls(view);
  }
}

/** Pages forward from the newest message we hold (after a reconnect or a gap in seqs). */
async function catchUp(view) {
  let after = view.messages.at(-1)?.seq ?? 0;
  for (let i = 0; i < 20; i++) {
    const page = await api.get(`/conversations/${view.id}/messages?limit=200&after_seq=${after}`);
    await resolveUsers(page.messages.map((m) => m.sender_id));
    if (state.current !== view) return;
    for (const m of page.messages) upsertMessage(view, m);
    if (page.messages.length) after = page.messages.at(-1).seq;
    if (!page.has_more) break;
  }
  const { conversation } = await api.get(`/conversations/${view.id}`);
  if (state.current !== view) return;
  view.conversation = conversation;
  renderChatHeader(conversation);
  refreshTicks(view);
  scrollToBottom(false);
  markRead(view);
}

// ------------------------------------------------------------------ messages

const STATUS_RANK = { sent: 0, delivered: 1, read: 2 };

/** Sent / delivered / read for our own message, from the members' receipts we hold. */
function statusOf(view, m) {
  const others = view.conversation?.members.filter((x) => x.user_id !== state.me.id) ?? [];
  let computed = 'sent';
  if (others.length > 0 && others.every((x) => x.read_seq >= m.seq)) computed = 'read';
  else if (others.length > 0 && others.every((x) => x.delivered_seq >= m.seq)) computed = 'delivered';
  return STATUS_RANK[computed] >= STATUS_RANK[m.status] ? computed : m.status;
}

/** The newest of our own sent messages: its ticks also say the status in words. */
const newestOwn = (view) => view.messages.findLast((x) => x.sender_id === state.me.id && !x.deleted);

function ticksFor(view, m) {
  if (m.pending) {
    return m.failed
      ? h('span', { class: 'ticks failed', text: 'Not sent' })
      : h('span', { class: 'ticks pending', 'aria-label': 'Sending', title: 'Sending' }, '○');
  }
  const status = statusOf(view, m);
  const label = { sent: 'Sent', delivered: 'Delivered', read: 'Read' }[status];
  const glyph = h('span', { class: 'glyph', 'aria-hidden': 'true', text: status === 'sent' ? '✓' : '✓✓' });
  if (newestOwn(view) === m) return h('span', { class: `ticks ${status}`, title: label }, glyph, label);
  return h('span', { class: `ticks ${status}`, title: label }, glyph, h('span', { class: 'visually-hidden', text: label }));
}

function insertElement(view, li, m) {
  const list = $('message-list');
  if (m.pending) {
    list.append(li);
    return;
  }
  const index = view.messages.indexOf(m);
  const next = view.messages[index + 1];
  const before = next ? view.elements.get(next.id) : [...view.pending.keys()].map((k) => view.elements.get(`p:${k}`)).find(Boolean);
  list.insertBefore(li, before ?? null);
}

/** Adds or replaces a message in the open conversation, in seq order. */
function upsertMessage(view, m) {
  const existing = view.byId.get(m.id);
  if (existing) {
    view.messages[view.messages.indexOf(existing)] = m;
  } else {
    let i = view.messages.length;
    while (i > 0 && view.messages[i - 1].seq > m.seq) i--;
    view.messages.splice(i, 0, m);
  }
  view.byId.set(m.id, m);
  if (m.client_message_id && view.pending.has(m.client_message_id) && m.sender_id === state.me.id) {
    view.pending.delete(m.client_message_id);
    view.elements.get(`p:${m.client_message_id}`)?.remove();
    view.elements.delete(`p:${m.client_message_id}`);
  }
  const li = view.elements.get(m.id) ?? h('li', { class: 'message' });
  fillMessage(view, li, m);
  if (!view.elements.has(m.id)) {
    view.elements.set(m.id, li);
    insertElement(view, li, m);
  }
  if (m.sender_id === state.me.id) refreshTicks(view);
  if (state.current === view) renderOlderControls(view);
}

function fillMessage(view, li, m) {
  const mine = m.sender_id === state.me.id;
  li.className = `message ${mine ? 'mine' : 'theirs'}${m.deleted ? ' deleted' : ''}${m.pending ? ' pending' : ''}${m.failed ? ' failed' : ''}`;
  li.dataset.id = m.id ?? '';
  li.dataset.seq = m.seq ?? '';
  if (m.id && view.editing === m.id && !m.deleted) {
    li.replaceChildren(editForm(view, m));
    return;
  }
  const group = view.conversation?.type === 'group' || state.conversations.get(view.id)?.type === 'group';
  const sender = h('span', { class: `sender${group && !mine ? '' : ' visually-hidden'}`, text: `${userName(m.sender_id)}:` });
  let body;
  if (m.deleted) body = h('p', { class: 'text muted', text: 'Message deleted' });
  else if (m.integrity_error || m.content === null) body = h('p', { class: 'text warning-text', text: '⚠ This message could not be decrypted: its stored ciphertext failed the integrity check.' });
  else body = h('p', { class: 'text', text: m.content });
  const meta = h(
    'span',
    { class: 'meta' },
    m.edited_at && !m.deleted ? h('span', { class: 'edited', text: 'edited' }) : null,
    m.created_at ? h('time', { datetime: m.created_at, title: new Date(m.created_at).toLocaleString(), text: formatTime(m.created_at) }) : null,
    mine ? ticksFor(view, m) : null,
  );
  const actions = [];
  if (m.pending && m.failed) {
    actions.push(
      h('button', { type: 'button', class: 'small-button', onclick: () => retrySend(view, m) }, 'Retry'),
      h('button', { type: 'button', class: 'small-button', onclick: () => discardPending(view, m) }, 'Discard'),
    );
  }
  if (!m.pending && !m.deleted && mine) {
    if (view.confirmingDelete === m.id) {
      actions.push(
        h('span', { class: 'confirm-text', text: 'Delete for everyone?' }),
        h('button', { type: 'button', class: 'small-button danger', onclick: (e) => deleteMessage(view, m, e.currentTarget) }, 'Delete'),
        h('button', { type: 'button', class: 'small-button', onclick: () => setConfirmDelete(view, null, m) }, 'Keep'),
      );
    } else {
      actions.push(
        h('button', { type: 'button', class: 'small-button', 'aria-label': 'Edit message', onclick: () => startEdit(view, m) }, 'Edit'),
        h('button', { type: 'button', class: 'small-button', 'aria-label': 'Delete message', onclick: () => setConfirmDelete(view, m.id, m) }, 'Delete'),
      );
    }
  }
  let panel = null;
  if (state.atRest && !m.pending) {
    const panelId = `at-rest-${m.id}`;
    const open = view.atRestOpen.has(m.id);
    actions.push(
      h('button', {
        type: 'button',
        class: 'small-button at-rest-toggle',
        'aria-expanded': String(open),
        'aria-controls': panelId,
        title: 'What the database stores for this message',
        onclick: () => toggleAtRest(view, m),
      }, h('span', { class: 'icon-lock', 'aria-hidden': 'true' }), 'At rest'),
    );
    const old = li.querySelector('.at-rest');
    panel = old && old.id === panelId ? old : h('div', { class: 'at-rest', id: panelId, role: 'region', 'aria-label': 'Stored form of this message', hidden: true });
    panel.hidden = !open;
  }
  // On touch screens the actions hide behind one "more" button (CSS shows them on hover elsewhere).
  const actionsId = `actions-${m.id ?? m.client_message_id}`;
  const showActions = li.classList.contains('show-actions') || (m.pending && m.failed);
  li.classList.toggle('show-actions', Boolean(showActions));
  const more = actions.length && !(m.pending && m.failed)
    ? h('button', {
        type: 'button',
        class: 'more-button icon-button',
        'aria-label': 'Message actions',
        'aria-expanded': String(Boolean(showActions)),
        'aria-controls': actionsId,
        onclick: (e) => {
          const open = li.classList.toggle('show-actions');
          e.currentTarget.setAttribute('aria-expanded', String(open));
        },
      }, '⋯')
    : null;
  li.replaceChildren(
    ...[
      h('div', { class: 'message-row' }, h('div', { class: 'bubble' }, sender, body, meta), more, actions.length ? h('div', { class: 'actions', id: actionsId }, actions) : null),
      panel,
    ].filter(Boolean),
  );
}

function rerender(view, m) {
  const li = view.elements.get(m.id);
  if (li) fillMessage(view, li, m);
}

function refreshTicks(view) {
  for (const m of view.messages) {
    if (m.sender_id !== state.me.id || m.deleted) continue;
    const old = view.elements.get(m.id)?.querySelector('.ticks');
    old?.replaceWith(ticksFor(view, m));
  }
}

// --- edit / delete

function startEdit(view, m) {
  view.editing = m.id;
  view.confirmingDelete = null;
  rerender(view, m);
  const input = view.elements.get(m.id)?.querySelector('textarea');
  input?.focus();
  input?.setSelectionRange(input.value.length, input.value.length);
}

function stopEdit(view, m) {
  view.editing = null;
  rerender(view, view.byId.get(m.id) ?? m);
  view.elements.get(m.id)?.querySelector('.actions button')?.focus();
}

function editForm(view, m) {
  const inputId = `edit-${m.id}`;
  const input = h('textarea', { id: inputId, rows: '2', class: 'edit-input' });
  input.value = m.content ?? '';
  const save = h('button', { type: 'submit', class: 'small-button primary' }, 'Save');
  const form = h(
    'form',
    {
      class: 'edit-form bubble',
      onsubmit: async (e) => {
        e.preventDefault();
        const content = input.value;
        if (content.trim() === '') {
          showError('Cannot save the edit', new Error('a message cannot be empty; delete it instead'));
          return;
        }
        if (content === m.content) return stopEdit(view, m);
        await busy(save, async () => {
          try {
            const { message } = await api.patch(`/messages/${m.id}`, { content });
            view.editing = null;
            if (state.current === view) upsertMessage(view, message);
            updateListPreview(message);
            view.elements.get(m.id)?.querySelector('.actions button')?.focus();
            if (view.atRestOpen.has(m.id)) void loadAtRest(view, message);
          } catch (err) {
            showError('Could not edit the message', err);
          }
        });
      },
    },
    h('label', { for: inputId, class: 'visually-hidden', text: 'Edit message' }),
    input,
    h('span', { class: 'edit-buttons' }, h('button', { type: 'button', class: 'small-button', onclick: () => stopEdit(view, m) }, 'Cancel'), save),
  );
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      stopEdit(view, m);
    } else if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  return form;
}

function setConfirmDelete(view, id, m) {
  view.confirmingDelete = id;
  rerender(view, m);
  view.elements.get(m.id)?.querySelector('.actions button')?.focus();
}

async function deleteMessage(view, m, button) {
  await busy(button, async () => {
    try {
      const { message } = await api.delete(`/messages/${m.id}`);
      view.confirmingDelete = null;
      if (state.current === view) upsertMessage(view, message);
      updateListPreview(message);
      announce('Message deleted');
    } catch (err) {
      showError('Could not delete the message', err);
    }
  });
}

// --- at rest panel

function toggleAtRest(view, m) {
  if (view.atRestOpen.has(m.id)) view.atRestOpen.delete(m.id);
  else view.atRestOpen.add(m.id);
  rerender(view, view.byId.get(m.id) ?? m);
  if (view.atRestOpen.has(m.id)) void loadAtRest(view, m);
}

const hexGroups = (hex) => (hex ? hex.match(/.{1,8}/g).join(' ') : '—');

async function loadAtRest(view, m) {
  const panel = () => view.elements.get(m.id)?.querySelector('.at-rest');
  panel()?.replaceChildren(h('p', { class: 'muted', text: 'Reading the stored row…' }));
  try {
    const row = await api.get(`/messages/${m.id}/at-rest`);
    const target = panel();
    if (!target) return;
    if (row.deleted || row.ciphertext_bytes === 0) {
      target.replaceChildren(h('p', { text: 'Deleted: the ciphertext and its nonce were removed from the database; only a tombstone row remains.' }));
      return;
    }
    const dl = h('dl');
    const add = (term, value, cls) => dl.append(h('dt', { text: term }), h('dd', { class: cls, text: value }));
    add('Algorithm', row.algorithm ?? '—');
    add('Key', `conversation key v${row.key_version}, from master key ${row.master_key_fingerprint ?? 'unknown'}`);
    add('Nonce', hexGroups(row.nonce), 'hex');
    add('Auth tag', hexGroups(row.tag), 'hex');
    add('Ciphertext', `${row.ciphertext_bytes} bytes${row.ciphertext_bytes > 32 ? ', the first 32:' : ':'}`);
    dl.lastChild.append(h('span', { class: 'hex', text: hexGroups(row.ciphertext_preview) }));
    target.replaceChildren(
      h('p', { class: 'at-rest-title', text: 'Stored in the database' }),
      dl,
      h('p', { class: 'muted small', text: 'This is all a database dump holds. The server derives the key from its master key to show you the text.' }),
    );
  } catch (err) {
    panel()?.replaceChildren(h('p', { class: 'warning-text', text: describeError('Could not read the stored form', err) }));
  }
}

// --- sending

async function sendMessage(content) {
  const view = state.current;
  if (!view) return;
  const pending = {
    id: null,
    pending: true,
    client_message_id: crypto.randomUUID(),
    conversation_id: view.id,
    sender_id: state.me.id,
    content,
    created_at: new Date().toISOString(),
    edited_at: null,
    deleted: false,
    status: 'sent',
  };
  view.pending.set(pending.client_message_id, pending);
  const li = h('li', { class: 'message' });
  fillMessage(view, li, pending);
  view.elements.set(`p:${pending.client_message_id}`, li);
  insertElement(view, li, pending);
  scrollToBottom(true);
  // One send at a time: messages typed in a row keep their order (concurrent sends may not).
  const turn = state.sending.then(() => deliver(view, pending));
  state.sending = turn;
  await turn;
}

async function deliver(view, pending) {
  const body = { conversation_id: view.id, content: pending.content, client_message_id: pending.client_message_id };
  try {
    let message;
    try {
      if (state.live?.state !== 'live') throw new SoTalkError('network', 'not connected');
      message = await state.live.send(body);
    } catch (err) {
      // No live connection (or it dropped mid-send): the same client_message_id makes HTTP safe to retry.
      if (!['network', 'timeout', 'closed'].includes(err.code)) throw err;
      message = await state.client.sendMessage(body);
    }
    if (state.current === view) {
      upsertMessage(view, message);
      scrollToBottom(true);
    }
    updateListPreview(message, true);
  } catch (err) {
    pending.failed = true;
    // The server was unreachable or restarting: send it again by itself once the connection is back.
    pending.retryable = ['network', 'timeout', 'unavailable'].includes(err?.code);
    const li = view.elements.get(`p:${pending.client_message_id}`);
    if (li) fillMessage(view, li, pending);
    if (state.current === view) scrollToBottom(false);
    showError('Message not sent', err);
  }
}

function discardPending(view, pending) {
  view.pending.delete(pending.client_message_id);
  view.elements.get(`p:${pending.client_message_id}`)?.remove();
  view.elements.delete(`p:${pending.client_message_id}`);
  const input = $('composer-input');
  if (input.value === '') input.value = pending.content;
  input.focus();
}

function retrySend(view, pending) {
  pending.failed = false;
  pending.retryable = false;
  const li = view.elements.get(`p:${pending.client_message_id}`);
  if (li) fillMessage(view, li, pending);
  state.sending = state.sending.then(() => deliver(view, pending));
}

function updateListPreview(message, moveUp = false) {
  const item = state.conversations.get(message.conversation_id);
  if (!item) return;
  const last = item.last_message;
  if (!last || message.seq >= last.seq) item.last_message = message;
  item.last_seq = Math.max(item.last_seq ?? 0, message.seq);
  if (moveUp) sortConversations();
  renderConversationList();
}

// --- receipts

function markRead(view) {
  if (!view?.conversation || document.visibilityState !== 'visible' || state.current !== view) return;
  const newest = view.messages.at(-1)?.seq ?? 0;
  const me = view.conversation.members.find((x) => x.user_id === state.me.id);
  const item = state.conversations.get(view.id);
  if (item && item.unread_count) {
    item.unread_count = 0;
    renderConversationList();
  }
  if (newest <= view.readSent || (me && me.read_seq >= newest)) return;
  view.readSent = newest;
  if (!state.live?.receipt('read', view.id, newest)) {
    api.post(`/conversations/${view.id}/read`, { seq: newest }).catch((err) => showError('Could not send the read receipt', err));
  }
}

// ------------------------------------------------------------------ live events

function onFrame(frame) {
  switch (frame.type) {
    case 'new_message':
      void onNewMessage(frame.message);
      break;
    case 'message_updated':
      onMessageChanged(frame.message);
      break;
    case 'message_deleted':
      onMessageDeleted(frame);
      break;
    case 'receipt':
      onReceipt(frame);
      break;
    case 'typing':
      onTyping(frame);
      break;
    case 'key_rotated':
      onKeyRotated(frame);
      break;
    case 'member_added':
    case 'member_removed':
      void onMembership(frame);
      break;
    case 'error':
      showError('The live connection reported an error', new SoTalkError(frame.error?.code, frame.error?.message ?? 'unknown error', { field: frame.error?.field }));
      break;
    default:
      break;
  }
}

async function onNewMessage(m) {
  const typers = state.typing.get(m.conversation_id);
  typers?.delete(m.sender_id);
  const fromOther = m.sender_id !== state.me.id;
  const item = state.conversations.get(m.conversation_id);
  if (!item) {
    if (fromOther) state.live?.receipt('received', m.conversation_id, m.seq);
    scheduleListRefresh();
    return;
  }
  const view = state.current;
  const here = view?.id === m.conversation_id;
  if (fromOther && !(here && document.visibilityState === 'visible')) item.unread_count = (item.unread_count ?? 0) + 1;
  if (fromOther) state.live?.receipt('received', m.conversation_id, m.seq);
  if (here) {
    if (!view.conversation) {
      view.early.push(m);
    } else {
      await resolveUsers([m.sender_id]);
      if (state.current !== view) return;
      const gap = (view.messages.at(-1)?.seq ?? m.seq - 1) < m.seq - 1;
      const stick = isNearBottom() || !fromOther;
      upsertMessage(view, m);
      if (stick) scrollToBottom(true);
      if (gap) catchUp(view).catch(() => {});
      renderTyping();
      markRead(view);
    }
  }
  updateListPreview(m, true);
}

function onMessageChanged(m) {
  const view = state.current;
  if (view?.id === m.conversation_id && view.byId.has(m.id)) {
    if (view.editing === m.id) view.editing = null;
    upsertMessage(view, m);
    if (view.atRestOpen.has(m.id)) void loadAtRest(view, m);
  }
  const item = state.conversations.get(m.conversation_id);
  if (item?.last_message?.id === m.id) {
    item.last_message = m;
    renderConversationList();
  }
}

function onMessageDeleted({ conversation_id, id }) {
  const view = state.current;
  const tombstone = (m) => ({ ...m, content: null, deleted: true });
  if (view?.id === conversation_id && view.byId.has(id)) {
    if (view.editing === id) view.editing = null;
    upsertMessage(view, tombstone(view.byId.get(id)));
    if (view.atRestOpen.has(id)) void loadAtRest(view, view.byId.get(id));
  }
  const item = state.conversations.get(conversation_id);
  if (item?.last_message?.id === id) {
    item.last_message = tombstone(item.last_message);
    renderConversationList();
  }
}

function onReceipt(r) {
  const view = state.current;
  if (view?.id === r.conversation_id && view.conversation) {
    const member = view.conversation.members.find((x) => x.user_id === r.user_id);
    if (member) {
      member.delivered_seq = Math.max(member.delivered_seq, r.delivered_seq);
      member.read_seq = Math.max(member.read_seq, r.read_seq);
      refreshTicks(view);
    }
  }
  const item = state.conversations.get(r.conversation_id);
  // Read in another tab of ours: the unread badge goes.
  if (r.user_id === state.me.id && item && item.last_message && r.read_seq >= item.last_message.seq && item.unread_count) {
    item.unread_count = 0;
    renderConversationList();
  }
}

function onTyping({ conversation_id, user_id }) {
  if (user_id === state.me.id) return;
  let map = state.typing.get(conversation_id);
  if (!map) state.typing.set(conversation_id, (map = new Map()));
  map.set(user_id, Date.now() + TYPING_SHOW_MS);
  renderTyping();
  renderConversationList();
  setTimeout(() => {
    renderTyping();
    renderConversationList();
  }, TYPING_SHOW_MS + 50);
}

function renderTyping() {
  const view = state.current;
  const names = view ? typingNames(view.id) : [];
  const text = names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`;
  if ($('typing').textContent !== text) $('typing').textContent = text;
}

function onKeyRotated({ conversation_id, current_key_version }) {
  const item = state.conversations.get(conversation_id);
  if (item) item.current_key_version = current_key_version;
  const view = state.current;
  if (view?.id === conversation_id && view.conversation) {
    view.conversation.current_key_version = current_key_version;
    renderChatHeader(view.conversation);
  }
}

async function onMembership({ type, conversation_id, user_id }) {
  if (user_id === state.me.id) {
    if (type === 'member_removed') {
      state.conversations.delete(conversation_id);
      sortConversations();
      renderConversationList();
      if (state.current?.id === conversation_id) {
        location.hash = '#/';
        showError('Conversation closed', new Error('you are no longer a member of this conversation'));
      }
    } else {
      scheduleListRefresh();
    }
    return;
  }
  const view = state.current;
  if (view?.id !== conversation_id) {
    scheduleListRefresh();
    return;
  }
  try {
    const { conversation } = await api.get(`/conversations/${conversation_id}`);
    await resolveUsers(conversation.members.map((m) => m.user_id));
    if (state.current !== view) return;
    view.conversation = conversation;
    const item = state.conversations.get(conversation_id);
    if (item) item.members = conversation.members;
    renderChatHeader(conversation);
    refreshTicks(view);
    renderConversationList();
  } catch (err) {
    showError('Could not refresh the members', err);
  }
}

// ------------------------------------------------------------------ new chat and profile dialogs

function openDialog(dialog) {
  clearErrors();
  dialog.showModal();
}

async function lookUpWallet(address) {
  const clean = address.trim();
  if (!isWalletAddress(clean)) throw new Error(`"${shortAddress(clean) || clean}" is not a wallet address (base58 of a 32-byte public key)`);
  if (clean === state.me.wallet) throw new Error('that is your own wallet address');
  const { users } = await api.get(`/users?wallet=${encodeURIComponent(clean)}`);
  if (users.length === 0) throw new Error(`no SoTalk user has the wallet ${shortAddress(clean)} yet: they need to sign in once first`);
  state.users.set(users[0].id, users[0]);
  return users[0];
}

async function startDirect(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await busy(form.querySelector('button[type=submit]'), async () => {
    try {
      const user = await lookUpWallet($('direct-wallet').value);
      const { conversation } = await api.post('/conversations', { type: 'direct', member_ids: [user.id] });
      await conversationCreated(conversation);
      form.reset();
    } catch (err) {
      showError('Could not start the chat', err);
    }
  });
}

async function startGroup(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await busy(form.querySelector('button[type=submit]'), async () => {
    try {
      const addresses = [...new Set($('group-wallets').value.split(/[\s,;]+/).filter(Boolean))];
      const members = [];
      for (const address of addresses) members.push(await lookUpWallet(address));
      const title = $('group-title').value.trim();
      const { conversation } = await api.post('/conversations', { type: 'group', title: title || null, member_ids: members.map((u) => u.id) });
      await conversationCreated(conversation);
      form.reset();
    } catch (err) {
      showError('Could not create the group', err);
    }
  });
}

async function conversationCreated(conversation) {
  await resolveUsers(conversation.members.map((m) => m.user_id));
  if (!state.conversations.has(conversation.id)) {
    state.conversations.set(conversation.id, { ...conversation, last_message: null, unread_count: 0 });
    sortConversations();
  }
  renderConversationList();
  $('new-chat-dialog').close();
  location.hash = `#/c/${conversation.id}`;
}

function openProfile() {
  $('display-name').value = state.me.display_name ?? '';
  $('profile-address').value = state.me.wallet;
  $('export-base58').value = '';
  $('export-jwk').value = '';
  document.querySelector('#profile-dialog details').open = false;
  openDialog($('profile-dialog'));
}

async function saveName(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await busy(form.querySelector('button[type=submit]'), async () => {
    try {
      const { user } = await api.patch('/users/me', { display_name: $('display-name').value });
      state.me = user;
      saveWallet({ ...state.wallet, label: user.display_name });
      renderMe();
      renderConversationList();
      if (state.current?.conversation) renderChatHeader(state.current.conversation);
      $('profile-dialog').close();
      announce('Name saved');
    } catch (err) {
      showError('Could not save your name', err);
    }
  });
}

function downloadKey() {
  const blob = new Blob([exportJwk(state.wallet)], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: `sotalk-wallet-${state.wallet.address.slice(0, 8)}.jwk.json` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function copyAddress() {
  try {
    await navigator.clipboard.writeText(state.me.wallet);
    announce('Wallet address copied');
    $('copy-address').textContent = 'Copied';
    setTimeout(() => ($('copy-address').textContent = 'Copy'), 1500);
  } catch {
    const range = document.createRange();
    range.selectNodeContents($('my-address'));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    announce('Address selected: press Ctrl+C to copy');
  }
}

// ------------------------------------------------------------------ composer

function setUpComposer() {
  const input = $('composer-input');
  const resize = () => {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  };
  input.addEventListener('input', () => {
    resize();
    const view = state.current;
    if (!view || input.value === '') return;
    const now = Date.now();
    if (now - view.lastTypingSent > TYPING_SEND_EVERY_MS) {
      view.lastTypingSent = now;
      state.live?.typing(view.id);
    }
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const content = input.value;
    if (content.trim() === '' || !state.current) return;
    input.value = '';
    resize();
    if (state.current) state.current.lastTypingSent = 0;
    void sendMessage(content);
  });
}

// ------------------------------------------------------------------ start

function wireUp() {
  $('alert-close').addEventListener('click', clearErrors);
  $('create-wallet').addEventListener('click', async (e) => {
    clearErrors();
    const button = e.currentTarget;
    let record;
    try {
      record = await generateWallet();
      saveWallet(record);
    } catch (err) {
      showError('Could not create a wallet', err);
      return;
    }
    await signInWith(record, button);
  });
  $('import-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    let record;
    try {
      record = await importWallet($('import-key').value);
      saveWallet({ ...(loadWallets().find((w) => w.address === record.address) ?? {}), ...record });
      $('import-key').value = '';
    } catch (err) {
      showError('Could not import the key', err);
      return;
    }
    await signInWith(record, e.submitter);
  });
  $('new-chat-button').addEventListener('click', () => openDialog($('new-chat-dialog')));
  $('profile-button').addEventListener('click', openProfile);
  $('direct-form').addEventListener('submit', startDirect);
  $('group-form').addEventListener('submit', startGroup);
  $('name-form').addEventListener('submit', saveName);
  $('sign-out').addEventListener('click', () => signOut());
  $('copy-address').addEventListener('click', copyAddress);
  $('download-key').addEventListener('click', downloadKey);
  document.querySelector('#profile-dialog details').addEventListener('toggle', (e) => {
    if (!e.currentTarget.open) return;
    $('export-base58').value = exportSecretBase58(state.wallet);
    $('export-jwk').value = exportJwk(state.wallet);
  });
  $('profile-address').addEventListener('focus', (e) => e.currentTarget.select());
  $('more-conversations').addEventListener('click', (e) =>
    busy(e.currentTarget, () => loadConversations(false).catch((err) => showError('Could not load more conversations', err))),
  );
  $('load-older').addEventListener('click', () => state.current && loadOlder(state.current));
  messagesBox().addEventListener('scroll', () => {
    const view = state.current;
    if (view && messagesBox().scrollTop < 150) void loadOlder(view);
  }, { passive: true });
  document.addEventListener('visibilitychange', () => markRead(state.current));
  addEventListener('hashchange', () => void route());
  setUpComposer();
}

async function boot() {
  wireUp();
  if (!(await ed25519Supported())) {
    showSignIn();
    $('create-wallet').disabled = true;
    showError('This browser cannot be used', new Error('it has no Ed25519 support in WebCrypto. Use a current Chrome, Edge, Firefox or Safari'));
    return;
  }
  const session = loadSession();
  const wallet = session && loadWallets().find((w) => w.address === session.address);
  if (session && wallet && Date.parse(session.expires_at) > Date.now() + 60_000) {
    state.wallet = wallet;
    state.session = session;
    state.client = clientFor(wallet, { token: session.token, expiresAt: Date.parse(session.expires_at), user: undefined });
    try {
      state.me = await state.client.me();
      await enterApp();
      return;
    } catch (err) {
      showError('Could not restore your session', err);
      state.client?.close();
      state.client = null;
      state.session = null;
      saveSession(null);
    }
  }
  showSignIn();
}

void boot();
