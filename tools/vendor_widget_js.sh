#!/usr/bin/env bash
# Refresh the JavaScript that the rendered book serves itself, so it works offline:
#   book/_vendor/requirejs/      require.js            (npm: requirejs)
#   book/_vendor/html-manager/   embed-amd.js          (npm: @jupyter-widgets/html-manager)
#   book/_vendor/mathjax/        MathJax 3 (tex-mml-chtml + fonts + TeX extensions)  (npm: mathjax)
#   book/_vendor/jupyterquiz/    jupyterquiz.js + .css, the chapter quizzes (PyPI: jupyterquiz, via pip download)
# (book/_vendor/widgets-compat/compat.js is the project's own glue code, not vendored.)
# _config.yml serves book/_vendor/ as a static path (-> _build/html/_static/) and points
# `nb_ipywidgets_js` and `mathjax_path` at these files. The book build itself needs no npm;
# only this script does. Run from anywhere: bash tools/vendor_widget_js.sh
# (`bash tools/vendor_widget_js.sh jupyterquiz` refreshes only the quiz script, with pip and no npm.)
#
# The html-manager major version must match ipywidgets: ipywidgets 8.x asks for
# `@jupyter-widgets/html-manager ^1.0` (ipywidgets._version.__html_manager_version__);
# tests/test_notebooks_hygiene.py checks the vendored version against the installed ipywidgets.
set -euo pipefail

HTML_MANAGER_VERSION="${HTML_MANAGER_VERSION:-1.0.15}"
REQUIREJS_VERSION="${REQUIREJS_VERSION:-2.3.8}"
MATHJAX_VERSION="${MATHJAX_VERSION:-3.2.2}"
FONTAWESOME_VERSION="5.15.4"   # the version bundled in the html-manager CSS (only its license is fetched)
JUPYTERQUIZ_VERSION="${JUPYTERQUIZ_VERSION:-2.9.6.4}"
part="${1:-all}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/book/_vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch NAME VERSION -> extracts into $work/NAME-dir/package
  local name="$1" version="$2" dir="$work/$(echo "$1" | tr '/@' '__')"
  mkdir -p "$dir"
  (cd "$dir" && npm pack --silent "$name@$version" >/dev/null && tar xzf ./*.tgz)
  echo "$dir/package"
}

source_note() {  # source_note DIR NAME VERSION LICENSE FILES...
  local dir="$1" name="$2" version="$3" license="$4"; shift 4
  {
    echo "Vendored by tools/vendor_widget_js.sh from npm: $name@$version ($license)."
    echo "https://www.npmjs.com/package/$name/v/$version"
    echo
    echo "sha256 of the served files:"
    (cd "$dir" && sha256sum "$@")
  } > "$dir/SOURCE.txt"
}


# --- jupyterquiz (MIT), from PyPI ---------------------------------------------------------------
# The chapter quizzes (sequencer_mini.book.quiz) hand their JSON bank to jupyterquiz's show_questions.
# jupyterquiz's display_quiz inlines these scripts into every output; the book loads them once per page
# instead (_config.yml: html_js_files / html_css_files). Its JS files are concatenated in jupyterquiz's own
# (sorted) order. One change: its fallback that loads MathJax from a CDN when MathJax has no typeset() is
# removed (the book serves its own MathJax; nothing may be fetched off the book's host).
vendor_jupyterquiz() {
  local q="$dest/jupyterquiz" wheel
  rm -rf "$q" && mkdir -p "$q" "$work/jq"
  python -m pip download --quiet --no-deps --dest "$work/jq" "jupyterquiz==$JUPYTERQUIZ_VERSION"
  wheel="$(ls "$work"/jq/jupyterquiz-*.whl)"
  (cd "$work/jq" && python -m zipfile -e "$wheel" x)
  local src="$work/jq/x/jupyterquiz"
  for f in $(cd "$src/js" && ls *.js | sort); do cat "$src/js/$f"; echo; done \
    | sed "s#script.src = 'https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-svg.js';#/* CDN MathJax removed by tools/vendor_widget_js.sh */ return;#" \
    > "$q/jupyterquiz.js"
  if grep -v "href" "$q/jupyterquiz.js" | grep -q "https://"; then echo "jupyterquiz.js still names a URL" >&2; exit 1; fi
  cp "$src/styles.css" "$q/jupyterquiz.css"
  cp "$work"/jq/x/jupyterquiz-*.dist-info/LICENSE "$q/LICENSE"
  (cd "$q" && source_note . jupyterquiz "$JUPYTERQUIZ_VERSION" MIT jupyterquiz.js jupyterquiz.css)
  sed -i "1s#from npm: #from PyPI (pip download): #; 2s#.*#https://pypi.org/project/jupyterquiz/$JUPYTERQUIZ_VERSION/#" "$q/SOURCE.txt"
  echo "$JUPYTERQUIZ_VERSION" > "$q/VERSION"
}
if [[ "$part" == jupyterquiz ]]; then
  vendor_jupyterquiz
  du -sh "$dest/jupyterquiz" | sed "s#$root/##"
  exit 0
fi

rm -rf "$dest/requirejs" "$dest/html-manager" "$dest/mathjax"
mkdir -p "$dest/requirejs" "$dest/html-manager" "$dest/mathjax"

# --- require.js (MIT) -------------------------------------------------------------------------
pkg="$(fetch requirejs "$REQUIREJS_VERSION")"
cp "$pkg/require.js" "$dest/requirejs/require.js"
cat > "$dest/requirejs/LICENSE" <<'LIC'
MIT License

Copyright jQuery Foundation and other contributors, https://jquery.org/

This software consists of voluntary contributions made by many individuals. For exact
contribution history, see the revision history available at https://github.com/requirejs/requirejs

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
LIC
source_note "$dest/requirejs" requirejs "$REQUIREJS_VERSION" MIT require.js

# --- @jupyter-widgets/html-manager (BSD-3-Clause) ---------------------------------------------
# dist/embed-amd.js already contains dist/libembed-amd.js (it defines that AMD module and then
# calls renderWidgets()), so it is the only file the pages need.
pkg="$(fetch @jupyter-widgets/html-manager "$HTML_MANAGER_VERSION")"
grep -q 'define("@jupyter-widgets/html-manager/dist/libembed-amd"' "$pkg/dist/embed-amd.js" \
  || { echo "embed-amd.js no longer bundles libembed-amd; vendor dist/libembed-amd.js too" >&2; exit 1; }
cp "$pkg/dist/embed-amd.js" "$dest/html-manager/embed-amd.js"
# Font Awesome webfonts the widget CSS refers to (woff2/woff/ttf; the eot/svg fallbacks are for
# browsers the book does not support). book/_vendor/widgets-compat/compat.js points the
# html-manager's asset path (window.__jupyter_widgets_assets_path__) at this folder.
cp "$pkg"/dist/*.woff2 "$pkg"/dist/*.woff "$pkg"/dist/*.ttf "$dest/html-manager/"
cp "$pkg/dist/embed.js.LICENSE.txt" "$dest/html-manager/THIRD-PARTY-NOTICES.txt"
cat > "$dest/html-manager/LICENSE" <<'LIC'
BSD 3-Clause License

Copyright (c) 2015 Project Jupyter Contributors
All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted
provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this list of conditions
   and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice, this list of
   conditions and the following disclaimer in the documentation and/or other materials provided
   with the distribution.

3. Neither the name of the copyright holder nor the names of its contributors may be used to
   endorse or promote products derived from this software without specific prior written
   permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR
IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR
CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER
IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF
THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
LIC
pkg="$(fetch @fortawesome/fontawesome-free "$FONTAWESOME_VERSION")"
cp "$pkg/LICENSE.txt" "$dest/html-manager/LICENSE-fontawesome.txt"
(cd "$dest/html-manager" && source_note . @jupyter-widgets/html-manager "$HTML_MANAGER_VERSION" \
  "BSD-3-Clause; the webfonts are Font Awesome Free 5, SIL OFL 1.1" embed-amd.js *.woff2 *.woff *.ttf)
echo "$HTML_MANAGER_VERSION" > "$dest/html-manager/VERSION"

# --- MathJax 3 (Apache-2.0) -------------------------------------------------------------------
pkg="$(fetch mathjax "$MATHJAX_VERSION")"
m="$dest/mathjax"
cp "$pkg/LICENSE" "$m/LICENSE"
cp "$pkg/es5/tex-mml-chtml.js" "$m/tex-mml-chtml.js"
mkdir -p "$m/output/chtml/fonts" "$m/input/tex"
cp -r "$pkg/es5/output/chtml/fonts/woff-v2" "$m/output/chtml/fonts/"
cp -r "$pkg/es5/input/tex/extensions" "$m/input/tex/"      # loaded on demand (\require, autoload)
cp -r "$pkg/es5/ui" "$m/ui"                                  # menu
mkdir -p "$m/a11y" && cp "$pkg/es5/a11y/assistive-mml.js" "$m/a11y/"   # screen-reader MathML
source_note "$m" mathjax "$MATHJAX_VERSION" Apache-2.0 tex-mml-chtml.js

vendor_jupyterquiz

du -sh "$dest"/* | sed "s#$root/##"
echo "vendored: jupyterquiz $JUPYTERQUIZ_VERSION, html-manager $HTML_MANAGER_VERSION, requirejs $REQUIREJS_VERSION, mathjax $MATHJAX_VERSION"
