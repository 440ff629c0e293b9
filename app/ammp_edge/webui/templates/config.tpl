% rebase('base', title='Configuration')
% import json
% if applied:
<p class="okbox" id="config-applied">Config applied. The buses pick it up at their next cycle.{{f" {len(result.problems)} problem(s) below; the items with errors are skipped." if result and result.problems else ""}}</p>
% elif applied is False:
<div class="errorbox" id="config-errors"><p><strong>Not applied: the running config is unchanged.</strong></p>
<ul>
% for p in (result.problems if result else []):
<li class="{{p.severity}}"><code>{{p.path}}</code>: {{p.message}}{{" (warning)" if p.severity != "error" else ""}}</li>
% end
</ul>
% if result and result.usable:
<p>Only items with errors would be skipped. To apply it anyway, tick "apply despite errors" below.</p>
% end
</div>
% end
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
<form method="post" action="/config/restore" class="inline"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit">Restore the previous config</button></form>
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
<label>File <input type="file" name="file" accept=".json,application/json" id="config-file"></label>
<label>or paste JSON <textarea name="text" rows="10" id="config-text" spellcheck="false">{{text}}</textarea></label>
<label class="check"><input type="checkbox" name="anyway"> apply despite errors (the items with errors are skipped)</label>
<button type="submit" id="config-submit">Validate and apply</button>
</form>
</section>
