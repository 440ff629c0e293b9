% rebase('base', title='Status')
% import time
% def ago(t):
%   if not t:
%     return "never"
%   end
%   d = int(s["time"] - t)
%   return f"{d} s ago" if d < 120 else f"{d // 60} min ago" if d < 7200 else f"{d // 3600} h ago"
% end
% def dur(x):
%   return f"{x // 86400} d {x % 86400 // 3600} h" if x >= 86400 else f"{x // 3600} h {x % 3600 // 60} min" if x >= 3600 else f"{x // 60} min {x % 60} s"
% end
% if s["problems"]:
<section class="card" id="problems">
<h2>Problems</h2>
<table class="list">
<tr><th>Program</th><th>Problem</th><th>Why</th></tr>
% for p in s["problems"]:
<tr><td>{{p["program"] or ""}}</td><td class="bad">{{p["problem"]}}</td><td>{{p["why"]}}</td></tr>
% end
</table>
</section>
% end
% if initial:
<p class="warn" id="initial-warning">This node still uses its initial password. <a href="/settings">Change it</a>.</p>
% end
<div class="grid">
<section class="card">
<h2>Node</h2>
<table class="kv">
<tr><th>Node id</th><td id="node-id">{{s["node"]["node_id"] or "not yet provisioned"}}</td></tr>
<tr><th>Provisioning</th><td>{{s["node"]["state"]}}</td></tr>
<tr><th>Version</th><td>{{s["version"]}}</td></tr>
<tr><th>System uptime</th><td>{{dur(s["uptime"]["system_s"])}}</td></tr>
<tr><th>Clock</th><td><span class="{{'ok' if s['clock'].startswith('synch') else 'bad'}}">{{s["clock"]}}</span>
  · {{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s["time"]))}} UTC <span id="clock-skew" data-server-time="{{s['time']}}"></span></td></tr>
% cs = s["config_source"]
<tr><th>Config</th><td id="status-config">{{s["config_id"] or "none"}}{{f" · {s['config_problems']} problem(s)" if s["config_problems"] else ""}} · <a href="/config">view</a></td></tr>
% if s["config_id"]:
<tr><th>Config from</th><td id="status-config-source">{{cs["label"]}}{{f" at {cs['at']}" if cs["at"] else ""}}{{f" · replaced the local config {cs['replaced'].get('config_id')} ({cs['replaced'].get('label')})" if cs["replaced"] else ""}}</td></tr>
% end
<tr><th>Config control</th><td id="status-config-control">{{("managed by the AMMP cloud" + (" · a local config is kept until the cloud sends a new one" if cs["keep_local"] else "")) if cs["managed"] else f"local ({cs['local_because']})"}}</td></tr>
</table>
</section>
<section class="card">
<h2>Cloud link</h2>
<table class="kv">
<tr><th>Local broker</th><td><span class="{{'ok' if s['broker_connected'] else 'bad'}}">{{"reachable" if s["broker_connected"] else "not reachable"}}</span></td></tr>
% for b in s["bridges"]:
%   cls = {"connected": "ok", "disconnected": "bad"}.get(b["state"], "muted")
<tr><th>Bridge {{b["name"]}}</th><td><span class="{{cls}}">{{b["state"]}}</span> · {{b["address"]}}</td></tr>
% end
% if not s["bridges"]:
<tr><th>Bridges</th><td class="muted">none configured (data stays local)</td></tr>
% end
<tr><th>Outbox backlog</th><td id="outbox">{{s["outbox"]["count"] if s["outbox"]["count"] is not None else "?"}} readouts{{f", oldest {ago(s['outbox']['oldest_t'])}" if s["outbox"]["oldest_t"] else ""}}{{f" · {s['outbox']['dropped']} dropped when full" if s["outbox"].get("dropped") else ""}}</td></tr>
</table>
</section>
</div>
<section class="card">
<h2>Buses</h2>
<table class="list" id="buses">
<tr><th>Bus</th><th>Last cycle</th><th>Duration</th><th>Requests</th><th>Errors</th></tr>
% for bus in sorted(set(s["expected_buses"]) | set(s["buses"])):
%   b = s["buses"].get(bus)
<tr><td>{{bus}}</td>
% if b:
<td>{{ago(b["t"])}}</td><td>{{f"{b['duration']:.2f} s" if b["duration"] is not None else ""}}</td><td>{{b["requests"] if b["requests"] is not None else ""}}</td>
<td>{{"; ".join(f"{d}: {', '.join(e)}" for d, e in b["errors"].items()) or "none"}}</td>
% else:
<td class="muted" colspan="4">no cycle seen yet</td>
% end
</tr>
% end
</table>
</section>
<section class="card">
<h2>Programs</h2>
% if s["programs_error"]:
<p class="error">{{s["programs_error"]}}</p>
% end
<table class="list" id="programs">
<tr><th>Program</th><th>State</th><th>Details</th><th></th></tr>
% for p in s["programs"]:
<tr><td>{{p["name"]}}</td><td><span class="{{'ok' if p['state'] == 'RUNNING' else 'bad'}}">{{p["state"]}}</span></td><td>{{p["description"]}}</td><td><a href="/logs?program={{p['name']}}">log</a></td></tr>
% end
</table>
</section>
<section class="card">
<h2>Device</h2>
% y = s["system"]
% mb = lambda b: f"{b / 1e6:,.0f} MB" if b is not None else "?"
<table class="kv" id="device">
<tr><th>Host name</th><td>{{y["hostname"]}}</td></tr>
<tr><th>Data volume</th><td>{{mb(y["data_free_bytes"])}} free of {{mb(y["data_total_bytes"])}}</td></tr>
<tr><th>Memory</th><td>{{mb(y["memory_available_bytes"])}} available of {{mb(y["memory_total_bytes"])}}</td></tr>
% if y["root_read_only"] is not None:
<tr><th>Root file system</th><td>{{"read-only" if y["root_read_only"] else "writable"}}</td></tr>
% end
% st = y["settings"]
% if st:
<tr><th>Settings file</th><td>{{st["file"]}}{{"" if st["found"] else " (absent: defaults)"}}
%   if st["problems"]:
  <ul class="bad" id="settings-problems">
%     for p in st["problems"]:
  <li>{{p}}</li>
%     end
  </ul>
%   else:
  · <span class="ok">no problems</span>
%   end
</td></tr>
<tr><th>SSH</th><td>{{"on" if st["ssh"] else "off"}}{{f" · {st['ssh_keys']} key(s)" if st["ssh"] else ""}}</td></tr>
%   if st["wifi"]:
<tr><th>Wi-Fi</th><td>{{st["wifi"]["ssid"]}} · {{st["wifi"]["address"]}}</td></tr>
%   end
%   if st["access_point"]:
<tr><th>Access point</th><td><span class="{{'ok' if st['access_point'].get('active') else 'bad'}}">{{"on" if st["access_point"].get("active") else "not running"}}</span> · {{st["access_point"]["ssid"]}} · {{st["access_point"]["address"]}}</td></tr>
%   end
% end
</table>
</section>
<section class="card">
<h2>Network interfaces</h2>
<table class="list" id="interfaces">
<tr><th>Interface</th><th>State</th><th>MAC</th><th>IPv4</th><th>IPv6</th></tr>
% for i in s["interfaces"]:
<tr><td>{{i["name"]}}</td><td>{{"up" if i["up"] else "down"}}{{f" · {i['speed']} Mb/s" if i["speed"] else ""}}</td><td>{{i["mac"]}}</td><td>{{", ".join(i["ipv4"])}}</td><td class="small">{{", ".join(i["ipv6"])}}</td></tr>
% end
</table>
</section>
