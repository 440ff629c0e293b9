% rebase('base', title='Test a device')
<form class="card form" id="test-form">
<label>Configured device <select name="device" id="test-device">
<option value="">— enter a driver and address instead —</option>
% for d in devices:
<option value="{{d}}" {{"selected" if d == chosen else ""}}>{{d}}</option>
% end
</select></label>
<fieldset id="test-manual"><legend>Driver and address</legend>
<label>Driver <select name="driver">
% for d in drivers:
<option>{{d}}</option>
% end
</select></label>
<label>Type <select name="reading_type"><option>modbustcp</option><option>modbusrtu</option><option>rawserial</option><option>rawtcp</option></select></label>
<label>Host <input name="host" value="127.0.0.1"></label>
<label>Port <input name="port" value="502" inputmode="numeric"></label>
<label>Unit id <input name="unit_id" value="1" inputmode="numeric"></label>
<label>Serial port <input name="device_path" value="/dev/ttyUSB0"></label>
<label>Slave address <input name="slaveaddr" value="1" inputmode="numeric"></label>
<label>Baud rate <input name="baudrate" value="9600" inputmode="numeric"></label>
<label>Parity <select name="parity"><option>none</option><option>even</option><option>odd</option></select></label>
<label>Stop bits <select name="stopbits"><option>1</option><option>2</option></select></label>
</fieldset>
<button type="submit" id="test-read">Read once</button>
</form>
<div id="test-result"></div>
<form class="card form" id="inspect-form">
<h2>One register in every word and byte order</h2>
<p class="hint">Reads the register and its neighbours once and decodes from the address and one either side (off-by-one) in ABCD, CDAB, BADC and DCBA.</p>
<label>Register (0-based) <input name="register" id="inspect-register" inputmode="numeric" required></label>
<label>Function code <select name="fncode"><option value="3">3 holding</option><option value="4">4 input</option></select></label>
<button type="submit" id="inspect-read">Read</button>
</form>
<div id="inspect-result"></div>
