-- RunForge for Neovim (>= 0.7): train, watch, cancel and inspect runs through one
-- long-lived `runforgectl bridge` process (JSON lines; see protocol/PROTOCOL.md).

local M = {}

M.config = {
  cmd = { "runforgectl" }, -- how to run runforgectl
  autostart = true, -- start the daemon when none answers (runforgectl --start bridge)
  grace_s = nil, -- cancel grace window (nil: the daemon's cancelGraceSeconds)
  workspace = nil, -- default: the current directory
  timeout_ms = 90000,
}

local state = {
  job = nil,
  next_id = 1,
  pending = {}, -- id -> callback(ok, result_or_error)
  partial = "",
  runs = {}, -- run id -> view
  order = {}, -- run ids in the order first seen
  watched = {}, -- resolved workspace -> true
  daemon = "stopped", -- stopped | connecting | connected | lost
  daemon_pid = nil,
  ready_callbacks = {},
}
M._state = state

local TERMINAL_WORDS = {
  completed = "completed",
  cancelled_graceful = "cancelled (gracefully: partial artifacts kept)",
  cancelled_forced = "cancelled by force (killed at the grace deadline)",
  failed = "failed",
  lost = "lost (the daemon died while it ran)",
}

-- Model families whose train_progress.total_epochs is max_iter, a ceiling: the fit stops
-- as soon as it converges by its tol. Shown as "iteration N (max_iter M)", with an ETA
-- only as the bound "at max_iter". The same list as the VS Code adapter's and
-- runforge_contract.trainer_events.CEILING_FAMILIES (protocol/PROTOCOL.md).
local CEILING_FAMILIES = { logistic_regression = true, linear_svc = true }
M.CEILING_FAMILIES = CEILING_FAMILIES

local function notify(msg, level)
  vim.notify("RunForge: " .. msg, level or vim.log.levels.INFO)
end

local function is_null(v)
  return v == nil or v == vim.NIL
end

local function workspace()
  return M.config.workspace or vim.fn.getcwd()
end

local function describe_error(err)
  local text = err.message or "unknown error"
  if not is_null(err.remediation) and err.remediation ~= "" then
    text = text .. " — " .. err.remediation
  end
  return text
end

-- ---------------------------------------------------------------- run views

local function view_of(event)
  local view = state.runs[event.run_id]
  if not view then
    view = { run_id = event.run_id, workspace = event.workspace, phase = "queued", last = 0, history = {} }
    state.runs[event.run_id] = view
    table.insert(state.order, event.run_id)
  end
  return view
end

function M.describe(view)
  if view.phase == "queued" then
    return "queued"
  elseif view.phase == "starting" then
    return "starting…"
  elseif view.phase == "training" then
    if type(view.step) ~= "number" or type(view.total) ~= "number" then
      return "training…"
    end
    local elapsed = view.elapsed and string.format(", %d s elapsed", view.elapsed) or ""
    local remaining = (view.step > 0 and view.total > view.step) and view.eta or nil
    if not view.ceiling then
      local eta = remaining and string.format(", ETA %d s", remaining) or ""
      return string.format("training %d/%d%s%s", view.step, view.total, elapsed, eta)
    end
    if view.step == 0 and not view.numbers then
      return string.format("training (no iteration reported yet; max_iter %d)%s", view.total, elapsed)
    end
    local bound = remaining and string.format(", ETA ≤ %d s (at max_iter)", remaining) or ""
    return string.format("training iteration %d (max_iter %d)%s%s", view.step, view.total, elapsed, bound)
  elseif view.phase == "finishing" then
    local outcome = ""
    if view.ceiling and type(view.step) == "number" and type(view.total) == "number" then
      if view.step < view.total then
        outcome = string.format("converged after %d iterations; ", view.step)
      else
        outcome = string.format("stopped at max_iter (%d) before converging; ", view.total)
      end
    end
    return outcome .. "writing metrics and artifacts…"
  elseif view.phase == "cancelling" then
    if view.countdown then
      return string.format("Cancelling… %d s", view.countdown)
    end
    return "Cancelling…"
  end
  local words = TERMINAL_WORDS[view.terminal] or tostring(view.terminal)
  if view.reason and view.reason ~= "" and view.terminal ~= "completed" then
    return words .. ": " .. view.reason
  end
  return words
end

local function apply(event)
  local view = view_of(event)
  local terminal = event.type == "run_terminal"
  -- The bridge delivers each event once, in order; a run's first run_terminal always
  -- counts (after a daemon crash its number may repeat one already shown).
  if view.phase == "ended" or (event.run_seq <= view.last and not terminal) then
    return
  end
  view.last = math.max(view.last, event.run_seq)
  table.insert(view.history, event.type)
  local data = event.data or {}
  local t = event.type
  local announce = false
  if (t == "run_start" or t == "train_started") and type(data.model_family) == "string" then
    view.ceiling = CEILING_FAMILIES[data.model_family] == true
  end
  if t == "run_spawned" then
    view.phase = "starting"
  elseif t == "train_started" then
    view.training_started = event.ts
    if view.phase ~= "cancelling" then
      view.phase = "training"
    end
  elseif t == "train_progress" then
    view.step, view.total = data.epoch, data.total_epochs
    view.numbers = type(data.loss) == "number" or type(data.val_accuracy) == "number"
    if view.training_started then
      view.elapsed = math.max(0, math.floor(event.ts - view.training_started + 0.5))
    end
    if view.phase ~= "cancelling" then
      view.phase = "training"
    end
    if not view.first then
      view.first = { ts = event.ts, step = data.epoch }
    elseif type(data.epoch) == "number" and data.epoch > view.first.step and type(data.total_epochs) == "number" then
      local per = (event.ts - view.first.ts) / (data.epoch - view.first.step)
      view.eta = math.floor(per * (data.total_epochs - data.epoch) + 0.5)
    end
  elseif (t == "train_finished" or t == "metrics_computed" or t == "artifacts_written") and view.phase ~= "cancelling" then
    view.phase = "finishing"
  elseif t == "cancel_requested" then
    view.phase = "cancelling"
    announce = true
  elseif t == "cancel_countdown" then
    view.phase = "cancelling"
    view.countdown = data.seconds_remaining
    announce = true
  elseif t == "cancel_escalated" then
    view.countdown = 0
  elseif t == "index_orphaned" then
    notify(event.run_id .. " completed but is missing from the index: run :RunForgeRecover", vim.log.levels.WARN)
  elseif terminal then
    view.phase = "ended"
    view.terminal = is_null(data.state) and "unknown" or data.state
    view.reason = is_null(data.reason) and "" or data.reason
    view.countdown = nil
    local level = view.terminal == "completed" and vim.log.levels.INFO or vim.log.levels.WARN
    notify(event.run_id .. " " .. M.describe(view), level)
  end
  if announce then
    notify(event.run_id .. " " .. M.describe(view))
  end
  vim.cmd("redrawstatus")
end

-- ---------------------------------------------------------------- the bridge

local function on_message(msg)
  if msg.notify then
    if msg.notify == "ready" or msg.notify == "daemon_back" then
      local was = state.daemon
      state.daemon = "connected"
      state.daemon_pid = msg.data.pid
      if msg.notify == "daemon_back" then
        notify("the daemon is back (pid " .. msg.data.pid .. "); runs are replayed from where they stopped")
      end
      if was ~= "connected" then
        local callbacks = state.ready_callbacks
        state.ready_callbacks = {}
        for _, cb in ipairs(callbacks) do
          cb()
        end
      end
    elseif msg.notify == "daemon_lost" then
      state.daemon = "lost"
      notify("the daemon went away; waiting for it to come back (runforgectl daemon start)", vim.log.levels.WARN)
    end
  elseif msg.event then
    if not is_null(msg.event.run_id) and msg.event.run_id ~= "" then
      apply(msg.event)
    end
  elseif msg.id ~= nil then
    local cb = state.pending[msg.id]
    if cb then
      state.pending[msg.id] = nil
      if msg.ok then
        cb(true, msg.result)
      else
        cb(false, msg.error)
      end
    end
  end
end

local function on_stdout(_, data)
  -- data: the chunk split at newlines; its last item is an incomplete line (or "").
  data[1] = state.partial .. data[1]
  state.partial = table.remove(data)
  for _, line in ipairs(data) do
    if line ~= "" then
      local ok, msg = pcall(vim.fn.json_decode, line)
      if ok and type(msg) == "table" then
        on_message(msg)
      end
    end
  end
end

local function on_exit(_, code)
  state.job = nil
  state.partial = ""
  for id, cb in pairs(state.pending) do
    state.pending[id] = nil
    cb(false, { code = "DAEMON_UNAVAILABLE", message = "the bridge exited (" .. code .. ")" })
  end
  if state.daemon ~= "stopped" then
    state.daemon = "stopped"
    notify(
      "runforgectl bridge exited (" .. code .. "): is the daemon running? (runforgectl daemon start)",
      vim.log.levels.ERROR
    )
  end
end

function M.start(cb)
  if state.job then
    if cb then
      if state.daemon == "connected" then
        cb()
      else
        table.insert(state.ready_callbacks, cb)
      end
    end
    return
  end
  local cmd = vim.deepcopy(M.config.cmd)
  if M.config.autostart then
    table.insert(cmd, "--start")
  end
  table.insert(cmd, "bridge")
  state.daemon = "connecting"
  if cb then
    table.insert(state.ready_callbacks, cb)
  end
  local job = vim.fn.jobstart(cmd, { on_stdout = on_stdout, on_exit = on_exit, stdout_buffered = false })
  if job <= 0 then
    state.daemon = "stopped"
    notify("could not run " .. table.concat(M.config.cmd, " "), vim.log.levels.ERROR)
    return
  end
  state.job = job
  M.request("watch", { workspace = workspace(), since = vim.empty_dict() }, function(ok, result)
    if ok then
      state.watched[result.workspace] = true
    end
  end)
end

function M.stop()
  if state.job then
    state.daemon = "stopped"
    vim.fn.chanclose(state.job, "stdin")
    vim.fn.jobwait({ state.job }, 10000)
  end
end

-- Send a request; cb(ok, result_or_error). Ids are integers of our own.
function M.request(kind, fields, cb)
  if not state.job then
    M.start()
  end
  local id = state.next_id
  state.next_id = id + 1
  local msg = vim.deepcopy(fields or {})
  msg.type = kind
  msg.id = id
  state.pending[id] = cb or function() end
  vim.fn.chansend(state.job, vim.fn.json_encode(msg) .. "\n")
  return id
end

local function with_result(kind, fields, on_ok)
  M.request(kind, fields, function(ok, result)
    if ok then
      on_ok(result)
    elseif result.code == "WORKSPACE_NOT_TRUSTED" then
      local folder = (result.details or {}).workspace or workspace()
      notify(
        "the daemon does not trust " .. folder .. ". If you trust its code, run :RunForgeTrust " .. folder,
        vim.log.levels.ERROR
      )
    else
      notify(kind .. " failed: " .. describe_error(result), vim.log.levels.ERROR)
    end
  end)
end

local function orphan_warning(result)
  local orphans = result.orphans
  if type(orphans) == "table" and #orphans > 0 then
    local ids = {}
    for i, o in ipairs(orphans) do
      if i <= 3 then
        table.insert(ids, o.run_id)
      end
    end
    notify(
      string.format("%d run(s) on disk are missing from the index (%s): run :RunForgeRecover", #orphans, table.concat(ids, ", ")),
      vim.log.levels.WARN
    )
  end
end

local function scratch(name, lines, filetype)
  vim.cmd("botright new")
  local buf = vim.api.nvim_get_current_buf()
  vim.bo[buf].buftype = "nofile"
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].swapfile = false
  pcall(vim.api.nvim_buf_set_name, buf, name)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].filetype = filetype or ""
  vim.bo[buf].modifiable = false
  return buf
end

local function split_lines(text)
  return vim.split(text, "\n", { plain = true })
end

local function pretty(value)
  local ok, out = pcall(vim.fn.json_encode, value)
  return ok and out or tostring(value)
end

-- ---------------------------------------------------------------- commands

function M.train(preset)
  M.start(function()
    with_result("train", { workspace = workspace(), preset = preset or "std-train" }, function(result)
      local run = result.run
      local queued = is_null(run.queue_position) and "" or (" (queued #" .. run.queue_position .. ")")
      notify("training " .. run.run_id .. queued .. "; :RunForgeCancel to stop it")
    end)
  end)
end

function M.cancel(run_id)
  local fields = { workspace = workspace() }
  if run_id and run_id ~= "" then
    fields.run_id = run_id
  end
  if M.config.grace_s then
    fields.grace_s = M.config.grace_s
  end
  with_result("cancel", fields, function(result)
    local deadline = is_null(result.deadline_in_s) and "" or string.format(" (SIGKILL in %d s)", result.deadline_in_s)
    notify("cancelling " .. result.run.run_id .. deadline)
  end)
end

function M.trust(path)
  local folder = (path and path ~= "") and vim.fn.fnamemodify(path, ":p") or workspace()
  folder = folder:gsub("/$", "")
  with_result("trust", { path = folder }, function(result)
    notify("the daemon now trusts " .. result.path .. " (and everything beneath it)")
  end)
end

function M.recover()
  with_result("recover", { workspace = workspace() }, function(result)
    local r = result.report
    local lines = {
      "# RunForge Recovery Report",
      "",
      "workspace: " .. result.workspace,
      "scanned: " .. r.scanned_run_dirs,
      "already indexed: " .. r.already_indexed,
      "recovered: " .. #r.recovered,
      "skipped: " .. #r.skipped,
      "cancelled (left out): " .. #r.cancelled_excluded,
    }
    for _, item in ipairs(r.recovered) do
      table.insert(lines, "  recovered " .. item.run_id .. " (" .. item.reason .. ")")
    end
    for _, item in ipairs(r.skipped) do
      table.insert(lines, "  skipped " .. item.run_dir .. ": " .. item.error .. " " .. item.message)
    end
    scratch("runforge://recovery", lines, "markdown")
    notify("recovered " .. #r.recovered .. " run(s)")
  end)
end

function M.runs()
  with_result("runs", { workspace = workspace() }, function(result)
    orphan_warning(result)
    local lines = {}
    for _, o in ipairs(result.orphans) do
      table.insert(lines, o.run_id .. "  ORPHAN (missing from the index: :RunForgeRecover)")
    end
    for _, run in ipairs(result.runs) do
      local live = state.runs[run.run_id]
      local status = (live and live.phase ~= "ended") and M.describe(live) or run.state
      table.insert(lines, string.format("%s  %-20s %s", run.run_id, status, is_null(run.model) and "" or run.model))
    end
    if #lines == 0 then
      lines = { "no runs yet: :RunForgeTrain" }
    end
    scratch("runforge://runs", lines)
  end)
end

local DOCUMENTS = {
  show = "show",
  metrics = "metrics",
  ["feature-importance"] = "feature_importance",
  coefficients = "coefficients",
  interpretability = "interpretability",
}

-- :RunForgeShow [kind] [run id]
function M.show(kind, run_id)
  local request = DOCUMENTS[kind or "show"]
  if not request then
    run_id, request = kind, "show"
  end
  local fields = { workspace = workspace() }
  if run_id and run_id ~= "" then
    fields.run_id = run_id
  end
  with_result(request, fields, function(result)
    orphan_warning(result)
    local lines = { "// " .. result.path .. " (" .. result.run_id .. ")" }
    vim.list_extend(lines, split_lines(pretty(result.document)))
    scratch("runforge://" .. request .. "/" .. result.run_id, lines, "json")
  end)
end

-- For the statusline: the newest unfinished run, or "".
function M.statusline()
  for i = #state.order, 1, -1 do
    local view = state.runs[state.order[i]]
    if view.phase ~= "ended" then
      return "RunForge " .. view.run_id:sub(-8) .. ": " .. M.describe(view)
    end
  end
  if state.daemon == "lost" then
    return "RunForge: daemon away"
  end
  return ""
end

function M.setup(opts)
  M.config = vim.tbl_extend("force", M.config, opts or {})
  local function cmd(name, fn, nargs, desc)
    vim.api.nvim_create_user_command(name, fn, { nargs = nargs, desc = desc })
  end
  cmd("RunForgeTrain", function(a)
    M.train(a.args == "hq" and "hq-train" or "std-train")
  end, "?", "Train (Standard; 'hq' for High Quality)")
  cmd("RunForgeCancel", function(a)
    M.cancel(a.args)
  end, "?", "Cancel the active run (or RUN_ID)")
  cmd("RunForgeRecover", function()
    M.recover()
  end, 0, "Recover the index: re-add runs on disk missing from it")
  cmd("RunForgeRuns", function()
    M.runs()
  end, 0, "List runs (orphans first)")
  cmd("RunForgeShow", function(a)
    local args = vim.split(a.args, "%s+", { trimempty = true })
    M.show(args[1], args[2])
  end, "*", "Show a run's metadata, metrics, feature-importance, coefficients or interpretability")
  cmd("RunForgeTrust", function(a)
    M.trust(a.args)
  end, "?", "Trust a folder in the daemon (lets it run that folder's code)")
end

return M
