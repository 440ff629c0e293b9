% rebase('base', title='Log in')
<form method="post" action="/login" class="card narrow" id="login-form">
  <input type="hidden" name="csrf" value="{{login_csrf}}">
  <input type="hidden" name="next" value="{{next}}">
  % if error:
  <p class="error" id="login-error">{{error}}</p>
  % end
  <label>Password <input type="password" name="password" id="password" autocomplete="current-password" autofocus required maxlength="256"></label>
  <button type="submit">Log in</button>
  <p class="hint">The initial password is unique to this node. Whoever holds the device can read it: on the
  console of <code>ammp-edge up</code> (<code>docker logs</code>), in <code>{{initial_hint}}</code>,
  and on a Raspberry Pi image in <code>ammp-edge-credentials.txt</code> on the boot partition. Change it under Settings.
  Lost it? On the device: <code>ammp-edge webui --reset-password</code>.</p>
</form>
