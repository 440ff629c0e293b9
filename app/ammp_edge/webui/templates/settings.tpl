% rebase('base', title='Settings')
% if message:
<p class="okbox" id="settings-message">{{message}}</p>
% end
% if errors:
<div class="errorbox" id="settings-errors"><p><strong>Not saved:</strong></p><ul>
% for e in errors:
<li>{{e}}</li>
% end
</ul></div>
% end
<div class="grid">
<form method="post" action="/settings/password" class="card form" id="password-form">
<h2>Web UI password</h2>
% if initial:
<p class="warn">The initial password is still in use.</p>
% end
<input type="hidden" name="csrf" value="{{csrf}}">
<label>Current password <input type="password" name="current" autocomplete="current-password" required></label>
<label>New password (at least {{min_len}} characters) <input type="password" name="new" autocomplete="new-password" required minlength="{{min_len}}"></label>
<label>New password again <input type="password" name="repeat" autocomplete="new-password" required></label>
<button type="submit">Change password</button>
<p class="hint">Changing it ends every session, this one too.</p>
</form>
<form method="post" action="/settings/bridges" class="card form" id="bridges-form">
<h2>AMMP bridges</h2>
<input type="hidden" name="csrf" value="{{csrf}}">
<label class="check"><input type="checkbox" name="prod" {{"checked" if kv["prod"] else ""}}> production (mqtt.ammp.io)</label>
<label class="check"><input type="checkbox" name="stage" {{"checked" if kv["stage"] else ""}}> staging</label>
% for b in bridges:
<p class="small">{{b["name"]}}: {{b["state"]}} ({{b["address"]}})</p>
% end
<button type="submit">Save</button>
</form>
% c = kv["custom"] or {}
<form method="post" action="/settings/custom" class="card form" id="custom-form">
<h2>Custom MQTT broker</h2>
<input type="hidden" name="csrf" value="{{csrf}}">
<label>Host <input name="host" value="{{c.get('host') or ''}}"></label>
<label>Port <input name="port" value="{{c.get('port') or ''}}" placeholder="8883 (1883 without TLS)" inputmode="numeric"></label>
<label class="check"><input type="checkbox" name="tls" {{"checked" if c.get("tls", True) else ""}}> TLS</label>
<label class="check"><input type="checkbox" name="insecure" {{"checked" if c.get("insecure") else ""}}> skip the host name check</label>
<label>CA file on this node <input name="ca_file" value="{{c.get('ca_file') or ''}}"></label>
<label>or CA certificate (PEM) <textarea name="ca_cert" rows="3">{{c.get('ca_cert') or ''}}</textarea></label>
<label>User name <input name="username" value="{{c.get('username') or ''}}" autocomplete="off"></label>
<label>Password <input type="password" name="password" autocomplete="new-password" placeholder="{{'(stored; blank keeps it)' if c.get('has_password') else ''}}"></label>
<label class="check"><input type="checkbox" name="clear_password"> remove the stored password</label>
<label>Topic prefix <input name="topic_prefix" value="{{c.get('topic_prefix') or ''}}" placeholder="a/&lt;node id&gt;/"></label>
<label>Client id <input name="client_id" value="{{c.get('client_id') or ''}}"></label>
<label>Protocol <select name="protocol">
% for p in ("mqttv50", "mqttv311", "mqttv31"):
<option {{"selected" if p == c.get("protocol", "mqttv50") else ""}}>{{p}}</option>
% end
</select></label>
<label class="check"><input type="checkbox" name="remove"> remove the custom bridge</label>
<button type="submit">Save</button>
</form>
<form method="post" action="/settings/api" class="card form" id="api-form">
<h2>AMMP API</h2>
<input type="hidden" name="csrf" value="{{csrf}}">
<label>http_api_base_url <input name="http_api_base_url" value="{{kv['http_api_base_url']}}" placeholder="https://edge.ammp.io/api/v0"></label>
<button type="submit">Save</button>
</form>
<form method="post" action="/settings/loglevel" class="card form" id="loglevel-form">
<h2>Log level</h2>
<input type="hidden" name="csrf" value="{{csrf}}">
<label>Level <select name="log_level">
% for l in ("debug", "info", "warning", "error"):
<option {{"selected" if l == kv["log_level"] else ""}}>{{l}}</option>
% end
</select></label>
<button type="submit">Save</button>
</form>
<section class="card">
<h2>Custom actions</h2>
<p>Sensor re-addressing (IMT, Holykell) runs from the <a href="/scans#custom-actions">Scans</a> page, in the background.</p>
</section>
</div>
