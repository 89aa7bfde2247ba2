-- wrk script for seqserve benchmarks: every wrk thread owns exactly one connection (run
-- `wrk -tN -cN`) and one stream, and waits for each response before sending the next request
-- (wrk never pipelines unless request() returns several), so each stream steps in order.
--
-- Environment (set by bench/loadgen.py):
--   BENCH_MODE      steps | naive | noop | predict | bulk | create | v2 (KServe V2 sequence steps)
--                   | triton (V2 sequence steps on raw Triton: integer sequence_id, input X [1,F])
--   BENCH_IDS       file with one session id per line (steps: one per thread; bulk: BENCH_BULK per thread)
--   BENCH_MODEL     model name (predict, bulk, create)
--   BENCH_FEATURES  input features per step
--   BENCH_LAYERS, BENCH_HIDDEN, BENCH_LSTM   state shape for the naive baseline's client-carried h/c
--   BENCH_BULK      sessions per bulk request (default 256)
--   BENCH_CREATE    sessions each thread creates before it stops (create)
--   BENCH_SEQ_BASE  triton: thread i steps sequence BENCH_SEQ_BASE + i (default 1000); the warm-up
--                   reuses the same ids so Triton's fixed sequence slots are not exhausted
-- done() prints one line "BENCH_RESULT {json}" that bench/loadgen.py parses.

local mode = os.getenv("BENCH_MODE") or "steps"
local features = tonumber(os.getenv("BENCH_FEATURES") or "4")
local model = os.getenv("BENCH_MODEL") or "bench"
local bulk_size = tonumber(os.getenv("BENCH_BULK") or "256")

local function step_row(k)
  local xs = {}
  for i = 1, features do
    xs[i] = string.format("%.4f", math.sin(k * 0.37 + i))
  end
  return "[" .. table.concat(xs, ",") .. "]"
end

-- main state: hand each thread its session id(s) --------------------------------------------
local threads = {}
local ids = nil
local next_id = 1

local function load_ids()
  ids = {}
  local path = os.getenv("BENCH_IDS")
  if path and path ~= "" then
    for line in io.lines(path) do
      if line ~= "" then ids[#ids + 1] = line end
    end
  end
end

function setup(thread)
  if ids == nil then load_ids() end
  thread:set("tindex", #threads)
  if mode == "steps" then
    if next_id > #ids then error("BENCH_IDS has fewer ids than threads") end
    thread:set("sid", ids[next_id])
    next_id = next_id + 1
  elseif mode == "bulk" then
    local mine = {}
    for _ = 1, bulk_size do
      if next_id > #ids then error("BENCH_IDS has fewer ids than threads * BENCH_BULK") end
      mine[#mine + 1] = ids[next_id]
      next_id = next_id + 1
    end
    thread:set("sids", table.concat(mine, " "))
  end
  table.insert(threads, thread)
end

-- thread states ------------------------------------------------------------------------------
local headers = { ["Content-Type"] = "application/json" }
-- globals, not locals: done() reads them from each thread with thread:get()
position = 0
ok_count = 0
non2xx = 0
item_errors = 0
bad_body = 0
local path, fixed_body, seq_param
local h_text, c_text
local create_target = tonumber(os.getenv("BENCH_CREATE") or "0")
local row = step_row(1)

local function zero_state()
  local layers = tonumber(os.getenv("BENCH_LAYERS") or "1")
  local hidden = tonumber(os.getenv("BENCH_HIDDEN") or "1")
  local zs = {}
  for i = 1, hidden do zs[i] = "0.0" end
  local layer = "[[" .. table.concat(zs, ",") .. "]]"
  local ls = {}
  for i = 1, layers do ls[i] = layer end
  return "[" .. table.concat(ls, ",") .. "]"
end

function init(args)
  if mode == "steps" then
    path = "/v1/sessions/" .. sid .. "/steps"
  elseif mode == "naive" then
    path = "/step"
    h_text = zero_state()
    if os.getenv("BENCH_LSTM") == "1" then c_text = zero_state() end
  elseif mode == "noop" then
    path = "/v1/noop"
    fixed_body = '{"inputs":[' .. row .. '],"position":0}'
  elseif mode == "predict" then
    path = "/v1/models/" .. model .. "/predict"
    fixed_body = '{"inputs":[[' .. row .. ']]}'
  elseif mode == "bulk" then
    path = "/v1/models/" .. model .. "/sessions/steps"
    local items = {}
    for id in string.gmatch(sids, "%S+") do
      items[#items + 1] = '{"session_id":"' .. id .. '","inputs":[' .. row .. ']}'
    end
    fixed_body = '{"steps":[' .. table.concat(items, ",") .. ']}'
  elseif mode == "create" then
    path = "/v1/models/" .. model .. "/sessions"
    fixed_body = "{}"
  elseif mode == "v2" then
    -- one Triton-style sequence per thread, started by its first request
    path = "/v2/models/" .. model .. "/infer"
    fixed_body = '"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,' .. features .. '],"data":' .. row .. '}]}'
    seq_param = '{"parameters":{"sequence_id":"bench-' .. tindex .. '-' .. os.time() .. '"'
  elseif mode == "triton" then
    -- Triton's correlation ids are integers here (config: CONTROL_SEQUENCE_CORRID TYPE_UINT64);
    -- the first request of each run carries sequence_start, which restarts a reused id
    path = "/v2/models/" .. model .. "/infer"
    fixed_body = '"inputs":[{"name":"X","shape":[1,' .. features .. '],"datatype":"FP32","data":' .. row .. '}]}'
    seq_param = '{"parameters":{"sequence_id":' .. (tonumber(os.getenv("BENCH_SEQ_BASE") or "1000") + tindex)
  else
    error("unknown BENCH_MODE " .. mode)
  end
end

function request()
  if mode == "steps" then
    return wrk.format("POST", path, headers, '{"inputs":[' .. row .. '],"position":' .. position .. '}')
  elseif mode == "naive" then
    local body = '{"inputs":[' .. row .. '],"h":' .. h_text
    if c_text then body = body .. ',"c":' .. c_text end
    return wrk.format("POST", path, headers, body .. "}")
  elseif mode == "v2" or mode == "triton" then
    local start = position == 0 and ',"sequence_start":true},' or '},'
    return wrk.format("POST", path, headers, seq_param .. start .. fixed_body)
  end
  return wrk.format("POST", path, headers, fixed_body)
end

function response(status, hdrs, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    return
  end
  ok_count = ok_count + 1
  if mode == "steps" or mode == "v2" or mode == "triton" then
    position = position + 1
  elseif mode == "naive" then
    -- carry the returned state into the next request: slice the h and c arrays out of the
    -- JSON text ({"outputs":...,"h":[...],"c":[...]}), no float parsing needed
    local hs = string.find(body, '"h":', 1, true)
    local cs = string.find(body, ',"c":', 1, true)
    if hs == nil or cs == nil then
      bad_body = bad_body + 1
      return
    end
    h_text = string.sub(body, hs + 4, cs - 1)
    if c_text then c_text = string.sub(body, cs + 5, #body - 1) end
  elseif mode == "bulk" then
    local _, n = string.gsub(body, '"error"', "")
    item_errors = item_errors + n
  elseif mode == "create" then
    if create_target > 0 and ok_count == create_target then
      -- bench/memory.py counts these lines and stops wrk with SIGINT once every thread is done
      io.write("CREATE_DONE\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local ok, bad, items, bodies = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    ok = ok + (t:get("ok_count") or 0)
    bad = bad + (t:get("non2xx") or 0)
    items = items + (t:get("item_errors") or 0)
    bodies = bodies + (t:get("bad_body") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"ok":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"item_errors":%d,' ..
    '"bad_body":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,' ..
    '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, ok, summary.duration, summary.bytes, bad, items, bodies, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
