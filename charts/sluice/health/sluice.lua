-- Argo CD health check for the Sluice kinds (ModelRoute, PromptTemplate, Budget, GuardrailPolicy).
-- Reads the same fields as Flux's kstatus, with the same answers:
--   observedGeneration behind metadata.generation (0 until the operator saw the object): Progressing
--   Stalled=True (invalid spec, dangling reference, model-name conflict): Degraded
--   Reconciling=True: Progressing
--   Ready=True: Healthy; Ready=False: Degraded; otherwise Progressing
-- Lua 5.1 (Argo CD runs gopher-lua); tested by tests/unit/test_argocd_health.py and the cluster tests.
local hs = {}
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status
if status == nil or status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Sluice operator to observe generation " .. generation
  return hs
end
local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.observedGeneration == nil or condition.observedGeneration >= generation then
      conditions[condition.type] = condition
    end
  end
end
local function say(condition)
  return (condition.reason or "") .. ": " .. (condition.message or "")
end
if conditions.Stalled ~= nil and conditions.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(conditions.Stalled)
  return hs
end
if conditions.Reconciling ~= nil and conditions.Reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = say(conditions.Reconciling)
  return hs
end
local ready = conditions.Ready
if ready == nil then
  hs.status = "Progressing"
  hs.message = "No Ready condition for generation " .. generation .. " yet"
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = say(ready)
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = say(ready)
else
  hs.status = "Progressing"
  hs.message = say(ready)
end
return hs
