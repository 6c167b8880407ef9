-- wrk script for `npm run bench`: per-request paths, headers and bodies, and a JSON summary.
--
--   wrk -s bench/wrk/requests.lua <url> -- <config.lua>
--
-- <config.lua> (written by bench/wrk.ts for each scenario) returns a table:
--   method   "GET" | "POST"
--   targets  { {path = "/v1/…", headers = {name = value, …}, method = …, body = …}, … }: one
--            picked at random per request (a target's method and body override the defaults)
--   body     request body or nil; every "{n}" in it becomes a counter unique across the run
--   idempotency  true: every request carries a distinct Idempotency-Key
-- Requests with nothing unique in them are formatted once, in init (a pool of 4,096 picked
-- targets, cycled), so the load generator does no string work per request.

local cfg
local pool = {}
local pool_size = 0
local next_in_pool = 0
local counter = 0
local unique = false
local thread_count = 0
-- thread_no is a global: setup() (in wrk's main Lua state) sets it in each thread's state.

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_no", thread_count)
end

local function pick()
  return cfg.targets[math.random(#cfg.targets)]
end

local function format(target, n)
  local headers = {}
  for k, v in pairs(target.headers) do headers[k] = v end
  local body = target.body or cfg.body
  if body and n then body = body:gsub("{n}", n) end
  if cfg.idempotency and n and (target.method or cfg.method) ~= "GET" then headers["Idempotency-Key"] = "wrk-" .. n end
  return wrk.format(target.method or cfg.method, target.path, headers, body)
end

function init(args)
  cfg = dofile(args[1])
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
  unique = cfg.idempotency or (cfg.body ~= nil and cfg.body:find("{n}", 1, true) ~= nil)
  for _, t in ipairs(cfg.targets) do
    if t.body ~= nil and t.body:find("{n}", 1, true) ~= nil then unique = true end
  end
  if not unique then
    pool_size = 4096
    for i = 1, pool_size do pool[i] = format(pick(), nil) end
  end
end

function request()
  if not unique then
    next_in_pool = next_in_pool % pool_size + 1
    return pool[next_in_pool]
  end
  counter = counter + 1
  return format(pick(), (thread_no or 0) .. "-" .. counter .. "-" .. cfg.run)
end

function done(summary, latency, requests)
  local e = summary.errors
  local p = {}
  for _, q in ipairs({ 50, 75, 90, 97.5, 99, 99.9 }) do
    p[#p + 1] = string.format('"%s":%.3f', tostring(q), latency:percentile(q) / 1000)
  end
  io.write(string.format(
    'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"latency_ms":{%s,"max":%.3f,"mean":%.3f}}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(p, ","), latency.max / 1000, latency.mean / 1000))
end
