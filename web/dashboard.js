// The dashboard: live grid stats (GET /v1/stats, public) and, for a signed-in account, its
// jobs with progress and results.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "runegrid.token";
let chart = null;
let priceChart = null;
let openJob = null;

function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

async function api(path) {
  const token = localStorage.getItem(TOKEN_KEY);
  const r = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || `http ${r.status}`);
  return body;
}

function drawChart(history) {
  const xs = history.map((s) => s.at / 1000);
  const data = [xs, history.map((s) => s.tasks_per_sec), history.map((s) => s.workers_native + s.workers_browser), history.map((s) => s.queued)];
  const width = Math.max(300, $("chart").clientWidth);
  if (!chart) {
    chart = new uPlot(
      {
        width,
        height: 220,
        series: [
          {},
          { label: "tasks/s", stroke: "#4f8cff", width: 2, fill: "rgba(79,140,255,0.12)" },
          { label: "workers", stroke: "#22a06b", width: 2, scale: "n" },
          { label: "queue", stroke: "#e5a000", width: 1.5, scale: "n" },
        ],
        axes: [{}, { label: "tasks/s" }, { side: 1, scale: "n", grid: { show: false } }],
      },
      data,
      $("chart"),
    );
  } else {
    chart.setSize({ width, height: 220 });
    chart.setData(data);
  }
}

function drawPrice(history) {
  const data = [history.map((s) => s.at / 1000), history.map((s) => (s.price || 0) / 1e6)];
  const width = Math.max(300, $("price-chart").clientWidth);
  if (!priceChart) {
    priceChart = new uPlot(
      {
        width,
        height: 140,
        series: [{}, { label: "credits per 10^9 fuel", stroke: "#b05cff", width: 2 }],
        axes: [{}, { label: "price" }],
      },
      data,
      $("price-chart"),
    );
  } else {
    priceChart.setSize({ width, height: 140 });
    priceChart.setData(data);
  }
}

async function refreshStats() {
  try {
    const s = await api("/v1/stats");
    const n = s.now;
    $("native").textContent = n.workers_native;
    $("browser").textContent = n.workers_browser;
    $("gpu").textContent = n.workers_gpu ?? 0;
    $("tps").textContent = n.tasks_per_sec.toFixed(1);
    $("queued").textContent = n.queued;
    $("running").textContent = n.running;
    $("verified").textContent = n.verified;
    $("failed").textContent = n.failed;
    $("price").textContent = ((n.price || 0) / 1e6).toFixed(3);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    drawChart(s.history.length ? s.history : [n]);
    drawPrice(s.history.length ? s.history : [n]);
  } catch (e) {
    $("updated").textContent = `cannot reach the coordinator: ${e.message}`;
  }
}

function duration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

async function refreshLeaderboard() {
  try {
    const b = await api("/v1/leaderboard");
    if (!b.contributors.length) return;
    $("leaders").innerHTML = b.contributors
      .map(
        (c) =>
          `<tr><td>${c.rank}</td><td>${c.name ? escapeHtml(c.name) : '<span class="muted">anonymous</span>'}</td><td>${(c.earned / 1e6).toFixed(3)}</td><td>${c.tasks_verified}</td><td>${duration(c.time_contributed_ms)}</td><td>${c.workers}</td></tr>`,
      )
      .join("");
  } catch {
    // The next refresh tries again.
  }
}

function progress(c) {
  const total = c.queued + c.running + c.verified + c.failed + (c.cancelled || 0);
  const pct = total ? (100 * (c.verified + c.failed)) / total : 0;
  const bad = total ? (100 * c.failed) / total : 0;
  return `<div class="bar" title="${c.verified} verified, ${c.failed} failed of ${total}"><div class="fill" style="width:${pct}%"></div><div class="fail" style="width:${bad}%"></div></div>`;
}

async function refreshJobs() {
  const token = localStorage.getItem(TOKEN_KEY);
  $("signout").hidden = !token;
  $("token").hidden = !!token;
  document.querySelector("#signin button[type=submit]").hidden = !!token;
  if (!token) {
    $("jobs").hidden = true;
    $("who").textContent = "sign in to see your jobs";
    return;
  }
  try {
    const me = await api("/v1/me");
    $("who").textContent = `signed in as ${me.name}`;
    const jobs = await api("/v1/jobs");
    $("jobs").hidden = false;
    $("jobs-message").textContent = jobs.length ? "" : "no jobs yet: submit one with `runegrid submit`";
    $("job-rows").innerHTML = jobs
      .map((j) => {
        const c = j.counts;
        const total = c.queued + c.running + c.verified + c.failed + (c.cancelled || 0);
        return `<tr class="job" data-job="${j.job}"><td>${j.job}</td><td>${escapeHtml(j.name || "unnamed")}</td><td><span class="pill ${j.state}">${j.state}</span></td><td>${j.policy}</td><td>${progress(c)}</td><td>${c.verified}/${total}</td></tr>`;
      })
      .join("");
    for (const tr of document.querySelectorAll("tr.job")) {
      tr.addEventListener("click", () => {
        openJob = Number(tr.dataset.job);
        refreshResults();
      });
    }
    if (openJob !== null) refreshResults();
  } catch (e) {
    $("jobs-message").textContent = `cannot list jobs: ${e.message}`;
    $("jobs-message").className = "message bad";
  }
}

async function refreshResults() {
  try {
    const r = await api(`/v1/jobs/${openJob}/results`);
    const rows = r.tasks
      .slice(0, 200)
      .map((t) => {
        const out = t.stdout ? escapeHtml(t.stdout.slice(0, 120)) : t.error ? `<span class="bad">${escapeHtml(t.error.slice(0, 120))}</span>` : "";
        return `<tr><td>${t.index}</td><td><span class="pill ${t.state}">${t.state}</span></td><td>${t.acceptance || ""}</td><td>${t.attempts}</td><td><code>${out}</code></td></tr>`;
      })
      .join("");
    $("results").innerHTML = `<h3>Job ${openJob}: results</h3><table><thead><tr><th>task</th><th>state</th><th>accepted</th><th>attempts</th><th>output</th></tr></thead><tbody>${rows}</tbody></table>`;
  } catch (e) {
    $("results").innerHTML = `<p class="message bad">cannot read job ${openJob}: ${escapeHtml(e.message)}</p>`;
  }
}

$("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (t) localStorage.setItem(TOKEN_KEY, t);
  $("token").value = "";
  refreshJobs();
});
$("signout").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  openJob = null;
  $("results").innerHTML = "";
  refreshJobs();
});

refreshStats();
refreshJobs();
setInterval(refreshStats, 2000);
setInterval(refreshJobs, 3000);
refreshLeaderboard();
setInterval(refreshLeaderboard, 5000);
