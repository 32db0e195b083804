-- Headless test of the plugin against a real daemon (started by tests/editors/test_nvim.py):
--   nvim --headless -u NONE -i NONE --cmd "set rtp+=editors/nvim" -c "luafile editors/nvim/tests/headless.lua"
-- RF_NVIM_SCENARIO picks the scenario; RF_CMD is runforgectl's argv (JSON); RF_WS the
-- trusted workspace; RF_WS_UNTRUSTED one the daemon does not trust.

local notes = {}
vim.notify = function(msg, level)
  table.insert(notes, { msg = msg, level = level or vim.log.levels.INFO })
  io.stdout:write("notify: " .. msg .. "\n")
end

local failures = 0
local function check(cond, what)
  if not cond then
    failures = failures + 1
    io.stdout:write("FAIL: " .. what .. "\n")
    error(what)
  end
  io.stdout:write("ok: " .. what .. "\n")
end

local function wait(what, cond, ms)
  check(vim.wait(ms or 120000, cond, 50), what)
end

local function noted(pattern, plain)
  for _, n in ipairs(notes) do
    if n.msg:find(pattern, 1, plain) then
      return n
    end
  end
  return nil
end

local function buffer_text()
  return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
end

local rf = require("runforge")
local ws = os.getenv("RF_WS")
rf.setup({ cmd = vim.fn.json_decode(os.getenv("RF_CMD")), workspace = ws, autostart = false })
local state = rf._state

local function newest_run()
  return state.order[#state.order]
end

local function train_and_wait_start(args)
  local before = #state.order
  vim.cmd("RunForgeTrain " .. (args or ""))
  wait("the run appears", function()
    return #state.order > before
  end)
  return newest_run()
end

local scenarios = {}

function scenarios.complete()
  local run_id = train_and_wait_start()
  local statuses = {}
  wait("the run ends", function()
    local line = rf.statusline()
    if line ~= "" then
      statuses[line] = true
    end
    return state.runs[run_id].phase == "ended"
  end)
  local view = state.runs[run_id]
  check(view.terminal == "completed", "completed, as the daemon classified it")
  check(view.history[1] == "run_queued" and view.history[#view.history] == "run_terminal", "events in order")
  local progress = 0
  for _, t in ipairs(view.history) do
    if t == "train_progress" then
      progress = progress + 1
    end
  end
  check(progress == 5, "every progress event once (" .. progress .. ")")
  local trained_progress = false
  for line in pairs(statuses) do
    -- The test trainer says logistic_regression: its total is max_iter, a ceiling.
    if line:find("training iteration %d+ %(max_iter 5%)") then
      trained_progress = true
    end
  end
  check(trained_progress, "progress in the statusline")
  -- How views read, for each kind of total (steps out of a fixed total; iterations under
  -- a ceiling, with the ETA as a bound; nothing reported yet).
  check(
    rf.describe({ phase = "training", step = 20, total = 100, elapsed = 2, eta = 8 })
      == "training 20/100, 2 s elapsed, ETA 8 s",
    "a fixed total: steps, elapsed, ETA"
  )
  check(
    rf.describe({ phase = "training", ceiling = true, numbers = true, step = 10, total = 1000, elapsed = 2, eta = 198 })
      == "training iteration 10 (max_iter 1000), 2 s elapsed, ETA ≤ 198 s (at max_iter)",
    "a ceiling: iterations, the ETA as a bound"
  )
  check(
    rf.describe({ phase = "training", ceiling = true, step = 0, total = 1000, elapsed = 3 })
      == "training (no iteration reported yet; max_iter 1000), 3 s elapsed",
    "nothing reported yet"
  )
  check(
    rf.describe({ phase = "finishing", ceiling = true, step = 11, total = 1000 })
      == "converged after 11 iterations; writing metrics and artifacts…",
    "how the fit ended"
  )
  check(noted(run_id .. " completed", true) ~= nil, "a completion notification")

  vim.cmd("RunForgeRuns")
  wait("the runs buffer", function()
    return buffer_text():find(run_id, 1, true) ~= nil
  end)
  vim.cmd("RunForgeShow metrics")
  wait("the metrics buffer", function()
    return vim.api.nvim_buf_get_name(0):find("runforge://metrics/", 1, true) ~= nil
  end)
  check(buffer_text():find("metrics", 1, true) ~= nil, "metrics document shown")
  vim.cmd("RunForgeShow")
  wait("the metadata buffer", function()
    return vim.api.nvim_buf_get_name(0):find("runforge://show/" .. run_id, 1, true) ~= nil
  end)

  -- The daemon does not trust the other folder: said with the folder and the command,
  -- and nothing is trusted behind the user's back.
  local untrusted = os.getenv("RF_WS_UNTRUSTED")
  rf.config.workspace = untrusted
  vim.cmd("RunForgeTrain")
  wait("the trust refusal", function()
    return noted("does not trust") ~= nil
  end)
  check(noted(":RunForgeTrust " .. vim.fn.resolve(untrusted), true) ~= nil, "the refusal names the folder and :RunForgeTrust")
  local trusted
  rf.request("list_trusted", {}, function(ok, result)
    trusted = ok and result.trusted
  end)
  wait("list_trusted", function()
    return trusted ~= nil
  end)
  for _, p in ipairs(trusted) do
    check(p ~= vim.fn.resolve(untrusted), "the folder was not trusted silently")
  end
  rf.config.workspace = ws
end

function scenarios.cancel()
  local run_id = train_and_wait_start()
  wait("training", function()
    return state.runs[run_id].phase == "training"
  end)
  vim.cmd("RunForgeCancel")
  local countdowns = {}
  wait("the run ends", function()
    local line = rf.statusline()
    if line:find("Cancelling… %d+ s") then
      countdowns[line] = true
    end
    return state.runs[run_id].phase == "ended"
  end)
  check(next(countdowns) ~= nil, "the countdown in the statusline")
  check(noted("Cancelling… %d+ s") ~= nil, "the countdown notified")
  local view = state.runs[run_id]
  check(view.terminal == "cancelled_graceful", "cancelled_graceful, as the daemon classified it (" .. tostring(view.terminal) .. ")")
  check(noted(run_id .. " cancelled (gracefully", true) ~= nil, "the terminal state notified")
end

function scenarios.orphans()
  local run_id = train_and_wait_start()
  wait("the run ends", function()
    return state.runs[run_id].phase == "ended"
  end)
  check(noted("missing from the index: run :RunForgeRecover") ~= nil, "index_orphaned warned")
  vim.cmd("RunForgeRuns")
  wait("the orphan banner", function()
    return noted("1 run%(s%) on disk are missing from the index") ~= nil
  end)
  check(buffer_text():find(run_id .. "  ORPHAN", 1, true) ~= nil, "the orphan listed first")
  os.remove(ws .. "/.ml/outputs")
  vim.cmd("RunForgeRecover")
  wait("the recovery report", function()
    return vim.api.nvim_buf_get_name(0):find("runforge://recovery", 1, true) ~= nil
  end)
  check(buffer_text():find("recovered " .. run_id, 1, true) ~= nil, "the report names the run")
end

local name = os.getenv("RF_NVIM_SCENARIO")
local ok, err = pcall(function()
  rf.start()
  wait("the bridge is ready", function()
    return state.daemon == "connected"
  end, 60000)
  scenarios[name]()
end)
rf.stop()
if not ok then
  io.stdout:write("ERROR: " .. tostring(err) .. "\n")
end
io.stdout:write(string.format("nvim %s: %s\n", name, (ok and failures == 0) and "passed" or "failed"))
io.stdout:flush()
vim.cmd((ok and failures == 0) and "qall!" or "cquit 1")
