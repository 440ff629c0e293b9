% rebase('base', title='Configuration')
% import json
% interval = f"{check_interval / 60:g} min" if check_interval >= 60 else f"{check_interval:g} s"
% if notice:
<p class="okbox" id="config-notice">{{notice}}</p>
% end
% if applied:
<p class="okbox" id="config-applied">Config applied. The buses pick it up at their next cycle.{{f" {len(result.problems)} problem(s) below; the items with errors are skipped." if result and result.problems else ""}}
% if source["managed"] and source["keep_local"]:
 It is kept until the AMMP cloud sends a new config, or until you hand control back.
% elif source["managed"] and source["source"] not in ("api", "d/config"):
 The AMMP cloud manages this node: its config replaces this edit at the next check (within {{interval}}).
% end
</p>
% if result and result.problems:
<ul id="config-result-problems">
% for p in result.problems:
<li class="{{p.severity}}">{{str(p)}}</li>
% end
</ul>
% end
% elif applied is False:
<div class="errorbox" id="config-errors"><p><strong>Not applied: the running config is unchanged.</strong></p>
<p class="small" id="config-verdict">{{result.message if result else ""}}</p>
<ul>
% for p in (result.problems if result else []):
<li class="{{p.severity}}">{{str(p)}}</li>
% end
</ul>
% if result and result.outcome == "unconfirmed":
<p>Only items with errors would be skipped. To apply it anyway, tick "apply despite errors" below.</p>
% end
</div>
% end
<section class="card" id="config-source">
<h2>Where the running config comes from</h2>
% if source["config_id"]:
<p>Config <code>{{source["config_id"]}}</code> from <strong id="config-origin">{{source["label"]}}</strong>{{f" at {source['at']}" if source["at"] else ""}}.</p>
% else:
<p class="muted">No config runs yet.</p>
% end
% r = source["replaced"]
% if r:
<p class="warn" id="config-replaced">The AMMP cloud's config replaced the local config <code>{{r.get("config_id")}}</code> from {{r.get("label")}} ({{r.get("at")}}).{{" Restore the previous config below to use it again." if has_previous else ""}}</p>
% end
% cloud = source["cloud"]
% if source["managed"]:
<p id="config-managed"><strong>Managed by the AMMP cloud.</strong> The node checks the cloud's config every {{interval}}{{f"; last check {cloud['checked']}: " + (f"the cloud's config is {cloud['config_id']}" if cloud.get("config_id") else "the cloud has no config for this node") if cloud else ""}}.</p>
%   k = source["keep_local"]
%   if k:
%     if not k.get("cloud_known"):
%       which = "the config the cloud has at the node's next check is taken as the one it replaced and not applied"
%     elif k.get("replaced"):
%       which = f"the cloud's config {k['replaced']}, the one it replaced, is not applied again"
%     else:
%       which = "the cloud had no config for this node when it was kept"
%     end
<p class="warn" id="config-kept">A local config is kept ({{k.get("by")}}, since {{k.get("since")}}): {{which}}; a new config from the cloud replaces it.</p>
<form method="post" action="/config/cloud" class="inline"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="hand-back">Hand control back to the AMMP cloud</button></form>
%   elif source["source"] not in (None, "api", "d/config") and cloud and cloud.get("config_id") and cloud.get("config_id") != source["config_id"]:
<p class="warn" id="config-local">This is a local config: the cloud's config {{cloud["config_id"]}} replaces it at the next check (within {{interval}}).</p>
%   end
% else:
<p id="config-unmanaged">Local: this node's config is not managed by the AMMP cloud ({{source["local_because"]}}); a config saved here stays until the next change.</p>
% end
</section>
% if unusable:
<div class="errorbox"><p>The stored config cannot be used (the buses keep the last usable one):</p><ul>
% for p in unusable:
<li><code>{{p.path}}</code>: {{p.message}}</li>
% end
</ul></div>
% end
<p class="actions"><a class="button" href="/config/download" id="download">Download config.json</a>
<a class="button" href="/config/add">Add a device</a>
% if has_previous:
<form method="post" action="/config/restore" class="inline"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="restore">Restore the previous config</button>
% if source["managed"]:
<label class="check"><input type="checkbox" name="cloud" value="keep" id="restore-keep"> keep it until the AMMP cloud sends a new config</label>
% end
</form>
% end
</p>
% if config:
<section class="card">
<h2>Devices <small>read every {{config.read_interval}} s{{", aligned" if config.read_roundtime else ""}} · config {{config.config_id}}</small></h2>
<div class="scroll"><table class="list" id="device-table">
<tr><th>Device</th><th>Name</th><th>Driver</th><th>Type</th><th>Address</th><th>Enabled</th><th>Readings</th><th></th></tr>
% for key, dev in (config.raw.get("devices") or {}).items():
%   dev = dev if isinstance(dev, dict) else {}
%   addr = dev.get("address") if isinstance(dev.get("address"), dict) else {}
%   nread = sum(1 for r in config.raw["readings"].values() if isinstance(r, dict) and r.get("device") == key)
<tr data-device="{{key}}"><td>{{key}}</td><td>{{dev.get("name") or ""}}</td><td>{{dev.get("driver")}}</td><td>{{dev.get("reading_type")}}</td>
<td class="small">{{", ".join(f"{k}={v}" for k, v in addr.items())}}</td><td>{{"no" if dev.get("enabled") is False else "yes"}}</td><td>{{nread}}</td>
<td><a href="/config/device/{{key}}">edit</a> · <a href="/test?device={{key}}">test</a></td></tr>
% end
</table></div>
</section>
% if config.problems:
<section class="card"><h2>Problems in the running config</h2><ul id="config-problems">
% for p in config.problems:
<li class="{{p.severity}}"><code>{{p.path}}</code>: {{p.message}}</li>
% end
</ul></section>
% end
% if config.outputs:
<section class="card"><h2>Outputs (JSONata)</h2><table class="list"><tr><th>Field</th><th>Source</th></tr>
% for o in config.outputs:
<tr><td>{{o.get("field") if isinstance(o, dict) else ""}}</td><td><code>{{o.get("source") if isinstance(o, dict) else o}}</code></td></tr>
% end
</table></section>
% end
% if config.raw.get("drivers"):
<section class="card"><h2>Drivers in the config</h2><p>{{", ".join(config.raw["drivers"])}} (override built-in drivers of the same name)</p></section>
% end
<details class="card"><summary>Config JSON</summary><pre class="json">{{json.dumps(config.raw, indent=2)}}</pre></details>
% elif not unusable:
<p class="muted">No config yet.</p>
% end
<section class="card">
<h2>Upload or paste a config</h2>
<form method="post" action="/config" enctype="multipart/form-data" id="upload-form" class="form">
<input type="hidden" name="csrf" value="{{csrf}}">
<label>File (JSON, or YAML named .yaml/.yml) <input type="file" name="file" accept=".json,.yaml,.yml,application/json,application/yaml" id="config-file"></label>
<label>or paste <select name="format" id="config-format"><option value="json">JSON</option><option value="yaml">YAML</option></select> <textarea name="text" rows="10" id="config-text" spellcheck="false">{{text}}</textarea></label>
<label class="check"><input type="checkbox" name="anyway"> apply despite errors (the items with errors are skipped)</label>
% if source["managed"]:
<p class="warn cloud-choice">The AMMP cloud manages this node's config: its next config (checked every {{interval}}) replaces a config saved here, unless you keep it until the cloud sends a new one.</p>
<button type="submit" id="config-submit" name="cloud" value="replace">Apply; the cloud's next config replaces it</button>
<button type="submit" id="config-keep" name="cloud" value="keep">Apply and keep until the cloud sends a new config</button>
% else:
<button type="submit" id="config-submit">Validate and apply</button>
% end
</form>
</section>
