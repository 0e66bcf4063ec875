// Glue between the vendored @jupyter-widgets/html-manager and this book (Apache-2.0, this project;
// not vendored). Loaded after require.js and before embed-amd.js through `nb_ipywidgets_js` in
// _config.yml.
(function () {
  'use strict';
  // 1. Serve the widget webfonts from the book. The bundled modules resolve their assets (the
  //    Font Awesome fonts in the widget CSS) against their own AMD module URL, which require.js
  //    derives from the module id: by default "<page dir>/@jupyter-widgets/...", which does not
  //    exist. Map the ids onto the vendored folder. (html-manager also reads
  //    window.__jupyter_widgets_assets_path__, but only after its CSS is already injected.)
  var here = document.currentScript && document.currentScript.src;
  if (here) {
    var assets = new URL('../html-manager/', here).href;
    window.__jupyter_widgets_assets_path__ = window.__jupyter_widgets_assets_path__ || assets;
    if (window.require && window.require.config) {
      window.require.config({
        paths: {
          '@jupyter-widgets/html-manager/dist': assets.replace(/\/$/, ''),
          '@jupyter-widgets/base': assets + 'base',
          '@jupyter-widgets/controls': assets + 'controls',
          '@jupyter-widgets/output': assets + 'output',
        },
      });
    }
  }
  // 2. html-manager 1.x typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue);
  //    the book loads MathJax 3. Provide that one call on top of MathJax 3 before the widgets
  //    render (they render on the window load event, after this listener).
  function installHub() {
    var mj = window.MathJax;
    if (!mj || mj.Hub) return;
    mj.Hub = {
      Queue: function (job) {
        var element = Array.isArray(job) ? job[2] : undefined;
        var run = function () {
          if (window.MathJax && window.MathJax.typesetPromise) {
            return window.MathJax.typesetPromise(element ? [element] : undefined);
          }
          return undefined;
        };
        var ready = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
        Promise.resolve(ready).then(run).catch(function () { /* math stays as text */ });
      },
    };
  }
  installHub();
  document.addEventListener('DOMContentLoaded', installHub);
  window.addEventListener('load', installHub);
})();
