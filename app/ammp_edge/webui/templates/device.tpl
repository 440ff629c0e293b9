% rebase('base', title=('Add a device' if add else f'Device {key}'))
% rt = v.get("reading_type") or "modbustcp"
% if errors:
<div class="errorbox" id="device-errors"><p><strong>Not applied: the running config is unchanged.</strong></p><ul>
% for e in errors:
<li>{{e}}</li>
% end
</ul></div>
% end
<form method="post" action="{{'/config/add' if add else '/config/device/' + key}}" class="card form" id="device-form">
<input type="hidden" name="csrf" value="{{csrf}}">
% if add:
<label>Device id <input name="key" value="{{key}}" required pattern="[A-Za-z0-9_.\-]{1,64}"></label>
<label>Type <select name="reading_type" id="reading_type">
% for t in ("modbustcp", "modbusrtu"):
<option value="{{t}}" {{"selected" if t == rt else ""}}>{{t}}</option>
% end
</select></label>
<label>Vendor id (serial number) <input name="vendor_id" value="{{v.get('vendor_id') or ''}}"></label>
% else:
<input type="hidden" name="reading_type" value="{{rt}}">
<p>Type: {{rt}}</p>
% end
<label>Name <input name="name" value="{{v.get('name') or ''}}" maxlength="200"></label>
<div class="driver-search"><label>Find a driver <input type="search" id="driver-search" placeholder="manufacturer, model or field (e.g. huawei, sunspec, batt_soc)" autocomplete="off"></label>
<ul id="driver-results" class="driver-results"></ul></div>
<label>Driver <select name="driver" id="driver">
% for d in drivers:
<option value="{{d}}" {{"selected" if d == v.get("driver") else ""}}>{{d}}</option>
% end
</select></label>
% if not add:
<label class="check"><input type="checkbox" name="all_fields" checked> when the driver changes, read every field of the new driver</label>
<label class="check"><input type="checkbox" name="enabled" {{"checked" if v.get("enabled") not in (False, None, "") else ""}} id="enabled"> enabled</label>
% end
<fieldset data-for="modbustcp" {{"hidden" if rt not in ("modbustcp",) and not add else ""}}><legend>Modbus TCP</legend>
<label>Host <input name="host" value="{{v.get('host') or ''}}"></label>
<label>Port <input name="port" value="{{v.get('port') or 502}}" inputmode="numeric"></label>
<label>Unit id <input name="unit_id" id="unit_id" value="{{v.get('unit_id') if v.get('unit_id') is not None else 1}}" inputmode="numeric"></label>
</fieldset>
<fieldset data-for="modbusrtu" {{"hidden" if rt not in ("modbusrtu", "serial") and not add else ""}}><legend>Modbus RTU (RS-485)</legend>
<label>Serial port <input name="device" value="{{v.get('device') or '/dev/ttyUSB0'}}"></label>
<label>Slave address <input name="slaveaddr" value="{{v.get('slaveaddr') or 1}}" inputmode="numeric"></label>
<label>Baud rate <input name="baudrate" value="{{v.get('baudrate') or 9600}}" inputmode="numeric"></label>
<label>Parity <select name="parity">
% for p in ("none", "even", "odd"):
<option {{"selected" if p == (v.get("parity") or "none") else ""}}>{{p}}</option>
% end
</select></label>
<label>Stop bits <select name="stopbits">
% for p in ("1", "2"):
<option {{"selected" if p == str(v.get("stopbits") or 1) else ""}}>{{p}}</option>
% end
</select></label>
</fieldset>
% if managed:
% interval = f"{check_interval / 60:g} min" if check_interval >= 60 else f"{check_interval:g} s"
<p class="warn cloud-choice">The AMMP cloud manages this node's config: its next config (checked every {{interval}}) replaces an edit saved here, unless you keep it until the cloud sends a new one.</p>
<button type="submit" id="device-save" name="cloud" value="replace">Apply; the cloud's next config replaces it</button>
<button type="submit" id="device-keep" name="cloud" value="keep">Apply and keep until the cloud sends a new config</button> <a href="/config">Cancel</a>
% else:
<button type="submit" id="device-save">Validate and apply</button> <a href="/config">Cancel</a>
% end
</form>
