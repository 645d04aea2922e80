-- report.lua - loaded by the other wrk scripts here: at the end of a run,
-- one machine-readable line for tests/bench/run.sh beside wrk's own report:
--   BENCH requests=N seconds=S non2xx=N p50_ms=X p99_ms=X connect=N read=N write=N timeout=N
-- non2xx is what wrk counts as a status error (4xx/5xx); 2xx = requests - non2xx.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f non2xx=%d p50_ms=%.3f p99_ms=%.3f connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration / 1e6, e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect, e.read, e.write, e.timeout))
end
