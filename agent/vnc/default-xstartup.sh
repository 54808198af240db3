#!/bin/sh
# vncdispatch's default session script, used when the user has no executable ~/.vnc/xstartup.
# Runs as the user with DISPLAY and XAUTHORITY set. When this script exits, the agent ends the session
# (like TigerVNC's vncsession), so the last command is exec'd and lives as long as the desktop.
xsetroot -solid '#3465a4' 2>/dev/null
if command -v x-window-manager >/dev/null 2>&1; then
  x-window-manager &
fi
exec xterm -geometry 100x30+40+40 -title "$USER@$(hostname)" -ls
