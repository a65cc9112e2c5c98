"""From buttons drawn inside HTML (chat bubbles, the composer chip) to server events, and the composer's manners.

Gradio's chatbot renders each bubble's HTML but has no per-message buttons of ours; a hidden ``gr.HTML`` per group
of actions listens for clicks on ``button.qic-act`` with one of its action names and sends ``{act, value}`` to its
own click event (Gradio's documented ``trigger``). The composer script keeps the send button disabled while the
message box is empty (Enter does nothing then) and puts the caret back in the box after choosing what to edit.
"""

from __future__ import annotations

import json

import gradio as gr

_BRIDGE = """
(() => {
  const names = %s;
  const key = 'qicBridge_' + names.join('_');
  if (window[key]) window.removeEventListener('click', window[key], true);
  window[key] = (e) => {
    const where = '#qic-chat button.qic-act, #qic-chip button.qic-act, #qic-redo button.qic-act';
    const b = e.target.closest && e.target.closest(where);
    if (!b || !names.includes(b.name)) return;
    e.preventDefault();
    e.stopPropagation();
    trigger('click', {act: b.name, value: b.value});
    if (['edit', 'unchip', 'rerun', 'unredo'].includes(b.name)) {
      const box = document.querySelector('#qic-msg textarea');
      if (box) box.focus();
    }
  };
  window.addEventListener('click', window[key], true);
})();
"""

COMPOSER_JS = """
(() => {
  if (window.qicComposer) return;
  window.qicComposer = true;
  const root = () => document.querySelector('#qic-msg');
  const empty = () => {
    const r = root();
    if (!r) return true;
    const box = r.querySelector('textarea');
    const files = r.querySelectorAll('.thumbnail-item').length;
    return (!box || !box.value.trim()) && files === 0;
  };
  const sync = () => {
    const r = root();
    if (!r) return;
    const send = r.querySelector('button.submit-button');
    if (send) send.disabled = empty();
  };
  document.addEventListener('input', sync, true);
  document.addEventListener('keypress', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && e.target.closest && e.target.closest('#qic-msg') && empty()) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);
  new MutationObserver(sync).observe(document.body, {subtree: true, childList: true});
  sync();
  // phones: the conversation list is a drawer, closed at first and after choosing where to go
  const narrow = () => window.matchMedia('(max-width: 768px)').matches;
  const closeDrawer = () => {
    const toggle = document.querySelector('.sidebar.open .toggle-button');
    if (toggle && narrow()) toggle.click();
  };
  window.qicCloseDrawer = closeDrawer;
  let tries = 0;
  const first = setInterval(() => {
    tries += 1;
    if (document.querySelector('.sidebar.open') || tries > 40) {
      clearInterval(first);
      closeDrawer();
    }
  }, 100);
  document.addEventListener('click', (e) => {
    const hit = e.target.closest && e.target.closest('#qic-new, #qic-convs button.qic-open');
    if (hit) setTimeout(closeDrawer, 50);
  }, true);
})();
"""


def bridge(names: tuple[str, ...], elem_id: str) -> gr.HTML:
    """A hidden component whose click event receives ``{"act": name, "value": ...}`` for the buttons ``names``."""
    return gr.HTML(
        "",
        visible="hidden",
        elem_id=elem_id,
        js_on_load=_BRIDGE % json.dumps(list(names)),
        apply_default_css=False,
    )


def composer_helper() -> gr.HTML:
    """A hidden component that runs the composer script once the page is up."""
    return gr.HTML("", visible="hidden", elem_id="qic-composer-js", js_on_load=COMPOSER_JS, apply_default_css=False)
