% rebase('base', title='Live readings')
% LEVELS = {0: ("OK", "lvl0"), 1: ("Info", "lvl1"), 2: ("Warning", "lvl2"), 3: ("Error", "lvl3"), 4: ("Critical", "lvl4")}
<p class="hint">Values update in place every 2 s. Click a field for its recent history. <span class="null-mark">null</span> = the device answered "no value";
<span class="stale-mark">stale</span> = older than 2.5 read intervals ({{live["read_interval"]}} s).</p>
<div id="chart-panel" class="card chart-panel" hidden>
  <div class="chart-head"><strong id="chart-title"></strong> <button type="button" id="chart-close">Close</button></div>
  <div id="chart"></div>
</div>
% if not live["devices"]:
<p class="muted" id="no-devices">No device configured and no readings yet. <a href="/config">Configuration</a></p>
% end
<div id="devices">
% for d in live["devices"]:
<section class="card device {{'stale' if d['stale'] else ''}}" data-device="{{d['key']}}">
  <h2>{{d["key"]}} <small>{{d["name"]}}</small></h2>
  <p class="meta"><span class="age" data-age>{{"no reading yet" if d["age"] is None else f"{d['age']} s ago"}}</span> · {{d["driver"]}} · {{d["bus"]}}
  % if d["t"] is not None and not d["answered"]:
  · <span class="bad">no answer</span>
  % end
  · <a href="/test?device={{d['key']}}">test</a></p>
  <table class="list fields">
  <tr><th>Field</th><th class="num">Value</th><th>Unit</th></tr>
  % for f in d["fields"]:
  <tr data-field="{{f['name']}}"><td><a href="#" class="field-link" title="{{f['description']}}">{{f["name"]}}</a></td>
  <td class="num value {{'null' if f['null'] else ''}}">{{"null" if f["null"] else "–" if f["missing"] else f["value"]}}</td><td>{{f["unit"]}}</td></tr>
  % end
  </table>
  <ul class="status-items">
  % for it in d["status"]:
  %   label, cls = LEVELS.get(it.get("l"), (f"Level {it.get('l')}", "lvl1"))
  <li><span class="level {{cls}}">{{label}}</span> {{it.get("c")}}</li>
  % end
  </ul>
</section>
% end
</div>
