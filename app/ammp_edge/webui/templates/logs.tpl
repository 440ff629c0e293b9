% rebase('base', title='Logs')
% if error:
<p class="error">{{error}}</p>
% end
<form class="card form inline-form" id="log-form">
<label>Program <select name="program" id="log-program">
% for p in programs:
<option value="{{p['name']}}" {{"selected" if p["name"] == chosen else ""}}>{{p["name"]}} ({{p["state"]}})</option>
% end
</select></label>
<label class="check"><input type="checkbox" id="log-follow" checked> follow</label>
</form>
<pre id="log-text" class="log"></pre>
