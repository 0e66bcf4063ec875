// Headless-Chromium checks of the rendered book (_build/html), run by tests/test_book.py.
//
//   node tests/browser/check_book.mjs --base http://127.0.0.1:PORT/ --root . --out _build/browser
//
// For every page listed in _toc.yml it checks: no JavaScript console errors or page errors, no
// failed or >= 400 requests, no request leaving localhost, every <img> loaded, math typeset by
// MathJax (when the page has math), the Colab and Binder launch links of notebook pages point at
// that notebook, and the ipywidgets embedded in the page render exactly once. Then it runs the
// search checks (search.html?q=...), the widget interaction checks declared in
// tests/browser/widget_checks.json, and saves screenshots under _build/screenshots/.
// Layout checks on every page, at 1280 px: the page title comes before any code cell (no collapsed
// toggle above the title) and there is exactly one visible search box. Theme checks on every page:
// a screenshot in the light and in the dark theme (_build/screenshots/<page>-<theme>.png), and, in
// the dark theme, every output figure and widget panel is measured in its own screenshot: the
// ring of pixels along its edge must be dark (no light panel or white figure background on a dark
// page). Pages listed under "diagrams" in checks.json must show that many loaded images in cells
// tagged "diagram". Data images (cells tagged "data-image": heatmaps, maps, confusion matrices, pictures of
// clothes) keep their colours in the dark theme (book/_theme/book.css), so the light-edge rule skips them;
// instead each "data_images" entry of checks.json samples one pixel of one such image whose value the caption
// names (e.g. an exact zero) and checks its colour in both themes. The "quizzes" pages: in each theme the
// jupyterquiz quiz renders from the vendored script, one multiple-choice question is answered wrongly and
// another rightly, and the feedback shown must be that choice's own text, marked incorrect / correct.
// Exit code 0 = all good; 1 = failures (listed on stdout and in <out>/report.json).

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodePNG, edgeLuminance } from './png.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const args = { base: null, root: path.resolve(here, '..', '..'), out: null, chromium: null };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    args[key] = argv[i + 1];
  }
  if (!args.base) throw new Error('--base http://127.0.0.1:PORT/ is required');
  if (!args.base.endsWith('/')) args.base += '/';
  args.root = path.resolve(args.root);
  args.out = path.resolve(args.out || path.join(args.root, '_build', 'browser'));
  args.chromium = args.chromium || process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  return args;
}

// --- _toc.yml and _config.yml, read with a few regexes (no YAML dependency) ---------------------
function tocFiles(root) {
  const text = fs.readFileSync(path.join(root, '_toc.yml'), 'utf8');
  const files = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '');
    const m = line.match(/^\s*(?:-\s*)?(?:root|file):\s*["']?([^"'\s]+)["']?\s*$/);
    if (m) files.push(m[1].replace(/\.(ipynb|md|rst)$/, ''));
  }
  return files;
}

function repository(root) {
  const text = fs.readFileSync(path.join(root, '_config.yml'), 'utf8');
  const block = text.split(/\n(?=\S)/).find((b) => b.startsWith('repository:')) || '';
  const get = (key) => (block.match(new RegExp(`\\n\\s+${key}:\\s*["']?([^"'\\n#]*?)["']?\\s*(#.*)?\\n`)) || [])[1];
  const url = (get('url') || '').replace(/\/$/, '');
  const branch = get('branch') || 'main';
  const bookPath = (get('path_to_book') || '').replace(/^\/|\/$/g, '');
  const gh = url.match(/github\.com\/([^/]+)\/([^/]+)/);
  return { url, branch, bookPath, org: gh && gh[1], repo: gh && gh[2] };
}

function readJson(file, fallback) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return fallback;
    throw err;
  }
}

const isLocal = (url) => {
  if (/^(data|blob|about):/.test(url)) return true;
  try {
    const { hostname } = new URL(url);
    return hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]';
  } catch {
    return false;
  }
};

const DARK_EDGE_MAX = 0.35;
const DATA_IMAGE = '.tag_data-image div.cell_output img';
const COLOUR_TOLERANCE = 40; // per channel, 0-255: antialiasing and PNG resampling at the sampled point // the dark page is ~0.07; a white figure or the theme's grey panel is > 0.7

async function openInTheme(context, args, doc, theme) {
  const page = await context.newPage();
  await page.emulateMedia({ colorScheme: theme });
  await page.addInitScript((t) => {
    localStorage.setItem('theme', t);
    localStorage.setItem('mode', t);
  }, theme);
  await page.goto(new URL(`${doc}.html`, args.base).href, { waitUntil: 'load', timeout: 60000 });
  await page.waitForLoadState('networkidle', { timeout: 30000 }).catch(() => {});
  await page.evaluate((t) => {
    document.documentElement.dataset.theme = t;
    document.documentElement.dataset.mode = t;
  }, theme);
  const views = await page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count();
  if (views) {
    await page.waitForFunction((n) => document.querySelectorAll('.widget-subarea .jupyter-widgets').length >= n,
      views, { timeout: 30000 }).catch(() => {});
  }
  await page.waitForTimeout(300);
  return page;
}

// Title first, one search box (at the context's 1280 px viewport), the declared diagrams.
async function checkLayout(page, doc, checks, problems) {
  const layout = await page.evaluate(() => {
    const visible = (e) => {
      const r = e.getBoundingClientRect();
      const s = getComputedStyle(e);
      return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
    };
    const article = document.querySelector('article.bd-article') || document.body;
    const h1 = article.querySelector('h1');
    const cell = article.querySelector('div.cell');
    const titleFirst = Boolean(h1) && (!cell
      || Boolean(h1.compareDocumentPosition(cell) & Node.DOCUMENT_POSITION_FOLLOWING));
    const searches = [...document.querySelectorAll('.search-button-field, .bd-search input, input[type=search]')]
      .filter(visible).length;
    const diagrams = [...document.querySelectorAll('.tag_diagram img')]
      .filter((img) => img.complete && img.naturalWidth > 0).length;
    return { titleFirst, hasTitle: Boolean(h1), searches, diagrams };
  });
  if (!layout.hasTitle) problems.push('no <h1> title');
  else if (!layout.titleFirst) problems.push('a code cell (e.g. the collapsed setup cell) comes before the page title');
  if (layout.searches !== 1) problems.push(`${layout.searches} visible search boxes at 1280 px (expected 1)`);
  const wanted = (checks.diagrams || {})[doc] || 0;
  if (layout.diagrams < wanted) problems.push(`${layout.diagrams} diagram image(s) in cells tagged "diagram", expected ${wanted}`);
  return layout;
}

// One pixel of a data image, in both themes: the colour its caption names (checks.json "data_images").
async function checkDataImages(context, args, toc, checks, failures, notes) {
  for (const spec of checks.data_images || []) {
    if (!toc.includes(spec.page)) continue;
    for (const theme of ['light', 'dark']) {
      const page = await openInTheme(context, args, spec.page, theme);
      const name = `${spec.page} [${theme}] data image #${spec.index} (${spec.what})`;
      try {
        const img = page.locator(DATA_IMAGE).nth(spec.index);
        await img.scrollIntoViewIfNeeded();
        const filter = await img.evaluate((e) => getComputedStyle(e).filter);
        if (filter && filter !== 'none') failures.push(`${name}: shown with the filter ${filter}`);
        const shot = decodePNG(await img.screenshot({ animations: 'disabled' }));
        const x = Math.round(spec.at[0] * (shot.width - 1));
        const y = Math.round(spec.at[1] * (shot.height - 1));
        const k = (y * shot.width + x) * shot.ch;
        const got = [shot.data[k], shot.data[k + 1], shot.data[k + 2]];
        const off = Math.max(...got.map((v, c) => Math.abs(v - spec.rgb[c])));
        if (off > COLOUR_TOLERANCE) {
          failures.push(`${name}: pixel at ${JSON.stringify(spec.at)} is rgb(${got}), the caption says ${spec.what} `
            + `rgb(${spec.rgb})`);
        }
        notes.data_images.push({ page: spec.page, theme, index: spec.index, rgb: got });
      } catch (err) {
        failures.push(`${name}: ${err.message.split('\n')[0]}`);
      }
      await page.close();
    }
  }
}

// The chapter quizzes (jupyterquiz): one wrong and one right answer, per theme, with their feedback.
async function checkQuizzes(context, args, toc, checks, failures, notes) {
  for (const spec of checks.quizzes || []) {
    if (!toc.includes(spec.page)) continue;
    for (const theme of ['light', 'dark']) {
      const page = await openInTheme(context, args, spec.page, theme);
      const errors = [];
      page.on('pageerror', (err) => errors.push(err.message));
      const name = `${spec.page} [${theme}] quiz`;
      const entry = { page: spec.page, theme, answers: [] };
      try {
        await page.waitForSelector('.sequencer-quiz[data-rendered="true"]', { timeout: 20000 });
        const questions = page.locator('.sequencer-quiz .Quiz:has(label.MCButton)');
        if ((await questions.count()) < 2) throw new Error('fewer than two multiple-choice questions rendered');
        for (const [q, want] of [[0, 'false'], [1, 'true']]) {
          const question = questions.nth(q);
          const choice = question.locator(`label.MCButton[data-correct="${want}"]`).first();
          await choice.scrollIntoViewIfNeeded();
          const expected = (await choice.getAttribute('data-feedback')) || '';
          await choice.click();
          const fb = question.locator('.Feedback');
          await page.waitForTimeout(200);
          const cls = (await fb.getAttribute('class')) || '';
          const text = ((await fb.textContent()) || '').trim();
          const mark = want === 'true' ? 'correct' : 'incorrect';
          if (!cls.split(/\s+/).includes(mark)) failures.push(`${name}: question ${q + 1} answered ${mark}ly, feedback class "${cls}"`);
          if (!(await fb.isVisible())) failures.push(`${name}: question ${q + 1}: the feedback is not visible`);
          const norm = (t) => t.replace(/\s+/g, ' ').trim();
          if (!expected || norm(text) !== norm(expected.replace(/<[^>]+>/g, ''))) {
            failures.push(`${name}: question ${q + 1}: feedback "${text}" is not the choice's own ("${expected}")`);
          }
          const colour = await fb.evaluate((e) => getComputedStyle(e).color);
          entry.answers.push({ question: q + 1, answered: mark, feedback: text, colour });
        }
        const file = path.join(args.root, '_build', 'screenshots', `${spec.page.replace(/^book\//, '')}-quiz-${theme}.png`);
        await page.locator('.sequencer-quiz').first().screenshot({ path: file });
        notes.screenshots.push(path.relative(args.root, file));
      } catch (err) {
        failures.push(`${name}: ${err.message.split('\n')[0]}`);
      }
      for (const e of errors) failures.push(`${name}: page error ${e}`);
      notes.quizzes.push(entry);
      await page.close();
    }
  }
}

async function checkThemes(context, args, toc, checks, failures, notes) {
  const dir = path.join(args.root, '_build', 'screenshots');
  fs.mkdirSync(dir, { recursive: true });
  for (const doc of toc) {
    const base = doc.replace(/^book\//, '').replace(/\//g, '_');
    for (const theme of ['light', 'dark']) {
      const problems = [];
      const page = await openInTheme(context, args, doc, theme);
      const applied = await page.evaluate(() => document.documentElement.dataset.theme);
      if (applied !== theme) problems.push(`theme is ${applied}, expected ${theme}`);
      const entry = { doc, theme, panels: 0, light_panels: [] };
      if (theme === 'light') entry.layout = await checkLayout(page, doc, checks, problems);
      const file = path.join(dir, `${base}-${theme}.png`);
      await page.screenshot({ path: file });
      entry.file = path.relative(args.root, file);
      notes.screenshots.push(entry.file);
      if (theme === 'dark') {
        const panels = page.locator('div.cell_output img, .widget-subarea');
        const count = await panels.count();
        for (let i = 0; i < count; i++) {
          const panel = panels.nth(i);
          const box = await panel.boundingBox();
          if (!box || box.width < 24 || box.height < 24) continue;
          if (!(await panel.isVisible())) continue;
          if (await panel.evaluate((e, sel) => e.matches(sel) || e.classList.contains('data-map'), DATA_IMAGE)) continue; // true colours
          entry.panels++;
          const shot = decodePNG(await panel.screenshot({ animations: 'disabled' }));
          // figures: their own pixels (inside padding and border); panels: the panel's background
          const inset = await panel.evaluate((e) => {
            if (e.tagName !== 'IMG') return 0;
            const st = getComputedStyle(e);
            return Math.ceil(Math.max(parseFloat(st.paddingTop) + parseFloat(st.borderTopWidth),
              parseFloat(st.paddingLeft) + parseFloat(st.borderLeftWidth)));
          });
          const lum = edgeLuminance(shot, 3, inset);
          if (lum > DARK_EDGE_MAX) {
            const what = await panel.evaluate((e) => (e.tagName === 'IMG' ? 'figure' : 'widget panel'));
            entry.light_panels.push({ index: i, what, luminance: Number(lum.toFixed(3)) });
            problems.push(`dark theme: ${what} #${i} has a light edge (luminance ${lum.toFixed(2)} > ${DARK_EDGE_MAX})`);
          }
        }
      }
      await page.close();
      for (const p of problems) failures.push(`${doc} [${theme}]: ${p}`);
      notes.themes.push(entry);
    }
  }
}

// --- page checks -------------------------------------------------------------------------------
async function checkPage(context, args, repo, doc, failures, notes) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('requestfailed', (req) => {
    if (isLocal(req.url())) problems.push(`request failed: ${req.url()} (${req.failure()?.errorText})`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()}: ${res.url()}`);
  });

  const url = new URL(`${doc}.html`, args.base).href;
  const response = await page.goto(url, { waitUntil: 'load', timeout: 60000 });
  if (!response || !response.ok()) problems.push(`could not open ${url}`);
  await page.waitForLoadState('networkidle', { timeout: 30000 }).catch(() => {});

  // images
  const badImages = await page.$$eval('img', (imgs) => imgs
    .filter((img) => !img.complete || img.naturalWidth === 0)
    .map((img) => img.currentSrc || img.src || img.outerHTML.slice(0, 80)));
  for (const src of badImages) problems.push(`image not loaded: ${src}`);

  // math: every .math element typeset by MathJax, no MathJax errors
  const mathCount = await page.locator('.math').count();
  if (mathCount > 0) {
    try {
      await page.waitForFunction(
        (n) => document.querySelectorAll('mjx-container').length >= n,
        mathCount, { timeout: 30000 });
    } catch {
      const got = await page.locator('mjx-container').count();
      problems.push(`math not rendered: ${got} of ${mathCount} math elements typeset`);
    }
    const mathErrors = await page.locator('mjx-merror, [data-mjx-error]').count();
    if (mathErrors) problems.push(`${mathErrors} MathJax error(s)`);
  }

  // launch buttons of notebook pages
  const ipynb = fs.existsSync(path.join(args.root, `${doc}.ipynb`));
  let colab = null;
  if (ipynb && repo.org) {
    const rel = [repo.bookPath, `${doc}.ipynb`].filter(Boolean).join('/');
    const expected = `https://colab.research.google.com/github/${repo.org}/${repo.repo}/blob/${repo.branch}/${rel}`;
    const hrefs = await page.$$eval('a[href*="colab.research.google.com"]', (as) => as.map((a) => a.href));
    colab = hrefs[0] || null;
    if (!hrefs.length) problems.push('no Colab launch link');
    for (const href of hrefs) {
      if (href !== expected) problems.push(`Colab link ${href} != ${expected}`);
    }
    const binder = await page.$$eval('a[href*="mybinder.org"]', (as) => as.map((a) => a.href));
    for (const href of binder) {
      const ok = href.includes(`/v2/gh/${repo.org}/${repo.repo}/${repo.branch}`)
        && decodeURIComponent(href).endsWith(`/${rel}`);
      if (!ok) {
        problems.push(`Binder link ${href} does not open ${rel}`);
      }
    }
  }

  // ipywidgets: every embedded widget view renders exactly once
  const views = await page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count();
  let widgets = 0;
  if (views > 0) {
    try {
      await page.waitForFunction(
        (n) => document.querySelectorAll('.widget-subarea').length >= n
          && document.querySelectorAll('.widget-subarea .jupyter-widgets').length >= n,
        views, { timeout: 30000 });
    } catch {
      problems.push('widgets did not render (no .widget-subarea/.jupyter-widgets)');
    }
    widgets = await page.locator('.widget-subarea').count();
    if (widgets !== views) problems.push(`${widgets} widget areas for ${views} widget views (loaded twice?)`);
    const errorWidgets = await page.locator('.jupyter-widgets .widget-error, .jupyter-widgets-error-widget').count();
    if (errorWidgets) problems.push(`${errorWidgets} widget(s) rendered as errors`);
  }

  await page.close();
  for (const p of problems) failures.push(`${doc}: ${p}`);
  notes.pages.push({ doc, url, math: mathCount, widget_views: views, widgets, colab, problems });
}

async function checkSearch(context, args, toc, check, failures, notes) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
  const url = new URL(`search.html?q=${encodeURIComponent(check.query)}`, args.base).href;
  await page.goto(url, { waitUntil: 'load', timeout: 60000 });
  let hrefs = [];
  try {
    // the index loads asynchronously; results are <li> in #search-results ul.search
    await page.waitForFunction(() => {
      const ul = document.querySelector('#search-results ul.search, ul.search');
      const status = document.querySelector('#search-results .search-summary, .search-summary');
      return (ul && ul.children.length > 0) || (status && /found|did not match|no pages/i.test(status.textContent));
    }, null, { timeout: 30000 });
    hrefs = await page.$$eval('#search-results ul.search li a, ul.search li a', (as) => as.map((a) => a.getAttribute('href')));
  } catch {
    failures.push(`search "${check.query}": no results appeared`);
  }
  const wanted = (check.expect || []).filter((doc) => toc.includes(doc));
  if (!hrefs.length) {
    failures.push(`search "${check.query}": no results`);
  }
  for (const doc of wanted) {
    if (!hrefs.some((h) => h && h.split(/[?#]/)[0].endsWith(`${doc}.html`))) {
      failures.push(`search "${check.query}": ${doc} not among results ${JSON.stringify(hrefs)}`);
    }
  }
  for (const e of errors) failures.push(`search "${check.query}": ${e}`);
  notes.search.push({ query: check.query, results: hrefs, expected: wanted });
  await page.close();
}

async function checkWidgetInteraction(context, args, check, failures, notes) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(new URL(`${check.page}.html`, args.base).href, { waitUntil: 'load', timeout: 60000 });
  const name = `${check.page}: ${check.name || check.selector}`;
  try {
    const target = page.locator(check.selector).nth(check.index || 0);
    await target.waitFor({ state: 'visible', timeout: 30000 });
    const watch = page.locator(check.watch).nth(check.watch_index || 0);
    await watch.scrollIntoViewIfNeeded();
    const before = await watch.screenshot();
    await target.click();
    for (const key of check.keys || []) await page.keyboard.press(key);
    await page.waitForTimeout(check.settle_ms || 500);
    const after = await watch.screenshot();
    const changed = !before.equals(after);
    if (check.expect === 'change' && !changed) failures.push(`${name}: ${check.watch} did not change after ${JSON.stringify(check.keys)}`);
    if (check.expect === 'same' && changed) failures.push(`${name}: ${check.watch} changed unexpectedly`);
    notes.widgets.push({ name, changed });
  } catch (err) {
    failures.push(`${name}: ${err.message.split('\n')[0]}`);
  }
  for (const e of errors) failures.push(`${name}: page error ${e}`);
  await page.close();
}

async function screenshots(context, args, toc, shots, notes) {
  const dir = path.join(args.root, '_build', 'screenshots');
  fs.mkdirSync(dir, { recursive: true });
  for (const shot of shots) {
    if (!toc.includes(shot.page)) continue;
    const page = await context.newPage();
    await page.emulateMedia({ colorScheme: shot.theme === 'dark' ? 'dark' : 'light' });
    await page.goto(new URL(`${shot.page}.html`, args.base).href, { waitUntil: 'load', timeout: 60000 });
    await page.evaluate((theme) => {
      localStorage.setItem('theme', theme);
      localStorage.setItem('mode', theme);
      document.documentElement.dataset.theme = theme;
      document.documentElement.dataset.mode = theme;
    }, shot.theme);
    await page.waitForLoadState('networkidle', { timeout: 30000 }).catch(() => {});
    if (shot.scroll_to) {
      await page.locator(shot.scroll_to).first().scrollIntoViewIfNeeded().catch(() => {});
    }
    await page.waitForTimeout(800);
    const file = path.join(dir, shot.file);
    await page.screenshot({ path: file, fullPage: Boolean(shot.full_page) });
    notes.screenshots.push(path.relative(args.root, file));
    await page.close();
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  fs.mkdirSync(args.out, { recursive: true });
  const toc = tocFiles(args.root);
  const repo = repository(args.root);
  const checks = readJson(path.join(here, 'checks.json'), {});
  const widgetChecks = readJson(path.join(here, 'widget_checks.json'), []);
  const failures = [];
  const notes = { base: args.base, toc, pages: [], search: [], widgets: [], screenshots: [], themes: [], offsite: [],
    quizzes: [], data_images: [] };

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'book-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
  // Nothing may leave localhost: abort and record any such request.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    notes.offsite.push(url);
    failures.push(`request left localhost: ${url}`);
    return route.abort();
  });

  try {
    if (!toc.length) failures.push('no pages found in _toc.yml');
    for (const doc of toc) await checkPage(context, args, repo, doc, failures, notes);
    for (const check of checks.search || []) await checkSearch(context, args, toc, check, failures, notes);
    for (const check of widgetChecks) {
      if (toc.includes(check.page)) await checkWidgetInteraction(context, args, check, failures, notes);
      else failures.push(`widget check names ${check.page}, which is not in _toc.yml`);
    }
    await screenshots(context, args, toc, checks.screenshots || [], notes);
    await checkThemes(context, args, toc, checks, failures, notes);
    await checkQuizzes(context, args, toc, checks, failures, notes);
    await checkDataImages(context, args, toc, checks, failures, notes);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }

  notes.failures = failures;
  fs.writeFileSync(path.join(args.out, 'report.json'), JSON.stringify(notes, null, 2));
  const widgetPages = notes.pages.filter((p) => p.widget_views > 0).length;
  console.log(`checked ${notes.pages.length} pages (${widgetPages} with widgets), `
    + `${notes.search.length} searches, ${notes.widgets.length} widget interactions, `
    + `${notes.themes.length} page themes (${notes.themes.reduce((n, t) => n + t.panels, 0)} dark-theme panels measured), `
    + `${notes.quizzes.length} quiz runs, ${notes.data_images.length} data-image pixels; `
    + `screenshots: ${notes.screenshots.join(', ') || 'none'}`);
  if (failures.length) {
    console.log(`${failures.length} failure(s):`);
    for (const f of failures) console.log(`  - ${f}`);
    process.exit(1);
  }
  console.log('all browser checks passed');
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
