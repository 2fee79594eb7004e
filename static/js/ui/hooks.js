// Extension points for features that build on the core client (issue 6:
// attachments, search, admin). Feature modules register here from app.js;
// the core views render whatever is registered and nothing otherwise.

/** Buttons in the sidebar's tool row: { id, label, icon, testid, visible(me) → bool, run() } */
export const sidebarTools = [];

/** Buttons left of the composer's text box: { id, label, icon, testid, run(ctx) }.
 *  ctx = { convId, addAttachment(att), textarea } */
export const composerTools = [];

/** Handlers for files dropped or pasted into a conversation: (files, ctx) → bool (handled). */
export const fileHandlers = [];

/** Hash routes other than conversations (e.g. '#/admin'):
 *  name → ({ params, show(node, cleanup?) }) => void; show() puts a page in the main pane. */
export const routes = {};

export function registerSidebarTool(t) { sidebarTools.push(t); }
export function registerComposerTool(t) { composerTools.push(t); }
export function registerFileHandler(fn) { fileHandlers.push(fn); }
export function registerRoute(name, fn) { routes[name] = fn; }

/** Filled in by app.js: navigation helpers for feature modules. */
export const app = {
  navigate: (hash) => { location.hash = hash; },
  jumpToMessage: (convId, messageId) => {},
};
