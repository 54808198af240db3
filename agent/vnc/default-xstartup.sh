#!/bin/sh
# vncdispatch's default session script, used when the user has no executable ~/.vnc/xstartup.
# Runs as the user with DISPLAY and XAUTHORITY set. When this script exits, the agent ends the session
# (like TigerVNC's vncsession), so the last command is exec'd and lives as long as the desktop.
xsetroot -solid '#3465a4' 2>/dev/null
if command -v x-window-manager >/dev/null 2>&1; then
  x-window-manager &
  # A client that maps while the window manager is still taking over the screen can be left unmanaged as a 1x1
  # window (seen with openbox and xterm). Wait, briefly and boundedly, until the manager announces itself.
  if command -v xprop >/dev/null 2>&1; then
    i=0
    while [ $i -lt 50 ] && ! xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q 'window id'; do
      sleep 0.05; i=$((i + 1))
    done
  fi
fi
exec xterm -geometry 100x30+40+40 -title "$USER@$(hostname)" -ls
