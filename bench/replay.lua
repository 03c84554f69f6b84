-- Replays bench/gen.py's request file: each request at most once per run (no repeats, so the
-- exporter's de-duplication never short-cuts the pipeline). Environment:
--   BENCH_REQUESTS  path of the request file (8-digit length + raw HTTP request, repeated)
--   BENCH_OFFSET    skip this many requests first (to continue a run on the same server)
--   BENCH_LIMIT     use at most this many requests
--   BENCH_WRAP=1    start over when the file is exhausted (only for the bare peer, which does
--                   not de-duplicate); otherwise the thread stops and reports `exhausted`.
--   BENCH_DELAY_MS  pause per connection between requests (a paced, not saturating, load)
--   BENCH_JSON      path to write the summary to (JSON), read by bench/bench.py
local reqs = {}
n = 0
idx = 0
exhausted = 0
local wrap = os.getenv("BENCH_WRAP") == "1"
local health = "GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")
  local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
  local f = assert(io.open(os.getenv("BENCH_REQUESTS"), "rb"))
  local seen = 0
  while limit == 0 or n < limit do
    local head = f:read(8)
    if not head then break end
    local len = tonumber(head)
    seen = seen + 1
    if seen > offset then
      n = n + 1
      reqs[n] = f:read(len)
    else
      f:seek("cur", len)
    end
  end
  f:close()
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end

function request()
  idx = idx + 1
  if idx > n then
    if wrap then
      idx = 1
    else
      if exhausted == 0 then
        wrk.thread:stop()
      end
      exhausted = exhausted + 1
      return health
    end
  end
  return reqs[idx]
end

function done(summary, latency, requests)
  local ex, sent, loaded = 0, 0, 0
  for _, t in ipairs(threads) do
    ex = ex + (t:get("exhausted") or 0)
    sent = sent + math.min(t:get("idx") or 0, t:get("n") or 0)
    loaded = loaded + (t:get("n") or 0)
  end
  local e = summary.errors
  local out = string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"min": %d, "mean": %.1f, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}, "exhausted": %d, "sent": %d, ' ..
    '"loaded": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, ex, sent, loaded)
  local path = os.getenv("BENCH_JSON")
  if path then
    local f = assert(io.open(path, "w"))
    f:write(out)
    f:close()
  end
  io.write(out)
end
