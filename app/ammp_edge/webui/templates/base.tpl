<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf" content="{{csrf}}">
<title>{{title}} · ammp-edge</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body data-page="{{page}}">
% if csrf:
<header class="top">
  <a class="brand" href="/">ammp-edge</a>
  <input type="checkbox" id="navtoggle" class="navtoggle"><label for="navtoggle" class="navbutton">Menu</label>
  <nav>
  % for href, label in (("/", "Status"), ("/live", "Live readings"), ("/config", "Configuration"), ("/test", "Test a device"), ("/scans", "Scans"), ("/logs", "Logs"), ("/settings", "Settings")):
    <a href="{{href}}" class="{{'active' if path == href else ''}}">{{label}}</a>
  % end
    <form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="logout">Log out</button></form>
  </nav>
</header>
% end
<main>
<h1>{{title}}</h1>
{{!base}}
</main>
</body>
</html>
