% rebase('base', title='Scans')
% if not any(available.values()):
<p class="warn">The scan functions are not available in this version.</p>
% end
<div class="grid">
<form class="card form scan-form" data-kind="network" id="scan-network">
<h2>Network</h2>
<label>Targets (IPs or networks; empty: this node's network) <input name="targets" id="scan-targets" placeholder="192.168.1.0/24"></label>
<label>Ports <input name="ports" value="22, 80, 443, 502"></label>
<button type="submit" {{"" if available["network"] else "disabled"}}>Scan the network</button>
</form>
<form class="card form scan-form" data-kind="serial" id="scan-serial">
<h2>RS-485 line</h2>
<label>Serial port <input name="port" list="serial-ports" placeholder="/dev/ttyUSB0"></label>
<datalist id="serial-ports">
% for p in serial_ports:
<option value="{{p}}">
% end
</datalist>
<label>Baud rate <select name="baudrate">
% for b in (9600, 19200, 38400, 4800, 2400, 57600, 115200):
<option>{{b}}</option>
% end
</select></label>
<button type="submit" {{"" if available["serial"] else "disabled"}}>Scan the line</button>
</form>
<form class="card form scan-form" data-kind="env" id="scan-env">
<h2>Full environment</h2>
<p class="hint">Network, serial line and SMA Speedwire, as upstream; the result can be sent for automatic configuration.</p>
<button type="submit" {{"" if available["env"] else "disabled"}}>Full scan</button>
</form>
<form class="card form scan-form" data-kind="action" id="custom-actions">
<h2>Sensor addressing</h2>
<p class="hint">Upstream's custom actions: give a factory-fresh sensor (slave 1) on {{sensor_port}} (KV <code>serial_sensor_port</code>) its address. The bus on that port pauses meanwhile.</p>
% for a in actions:
<button type="submit" name="action" value="{{a}}" {{"" if available[a] else "disabled"}}>{{a}}</button>
% end
</form>
</div>
<div id="jobs"></div>
