// Uploading attachments: the composer's attach button (a file picker), drag and
// drop and paste. Each file is sent to POST /attachments with progress, then
// added to the message being written (sent with its attachment_ids).

import { h } from '../dom.js';
import * as api from '../api.js';
import { showToast, errorText } from './common.js';
import { registerComposerTool, registerFileHandler } from './hooks.js';

export function uploadFiles(files, ctx) {
  for (const file of files) {
    const ui = ctx.startUpload(file.name || 'file');
    api.upload(file, (f) => ui.progress(f)).then(
      (att) => ui.done(att),
      (e) => { ui.fail(); showToast(`${file.name}: ${e.status === 413 ? 'the file is too large.' : errorText(e)}`, 'error', 6000); },
    );
  }
  return true;
}

registerComposerTool({
  id: 'attach',
  label: 'Attach files',
  icon: 'paperclip',
  testid: 'attach-button',
  run(ctx) { if (ctx._fileInput) ctx._fileInput.click(); },
  mount(ctx) {
    const input = h('input', {
      type: 'file', multiple: true, hidden: true, testid: 'attach-input', tabindex: '-1', 'aria-hidden': 'true',
      on: { change: () => { const files = [...input.files]; input.value = ''; if (files.length) uploadFiles(files, ctx); } },
    });
    ctx._fileInput = input;
    return input;
  },
});

registerFileHandler((files, ctx) => uploadFiles(files, ctx));
