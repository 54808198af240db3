#!/bin/sh
# vncdispatch's fallback session, used when the user has no usable ~/.vnc/xstartup and the system has no
# /etc/X11/Xvnc-session. Runs as the user, through their login shell, with DISPLAY, XAUTHORITY and the login locale
# set. When this script exits, the agent ends the session (like TigerVNC's vncsession), so the last command is exec'd
# and lives as long as the desktop.
#
# The window manager is IceWM when installed: one ~3 MB process that gives what a person expects of a desktop
# (windows moved and resized with the mouse, click to focus, a taskbar that brings back minimised windows, a start
# menu with a terminal, Alt+Tab), where openbox or xfwm4 alone leave a minimised window unreachable and xfwm4 wants
# xfconf and D-Bus besides. Otherwise the system's x-window-manager (openbox, xfwm4, …) is used.
xsetroot -solid '#3465a4' 2>/dev/null
wm=''
for candidate in icewm x-window-manager; do
  if command -v "$candidate" >/dev/null 2>&1; then wm=$candidate; break; fi
done
if [ -n "$wm" ]; then
  if [ "$wm" = icewm ]; then
    # IceWM's own settings for this session (its taskbar monitors poll mail, CPU and network: nothing a remote
    # desktop needs); a user's ~/.icewm/preferences still applies on top.
    icewm --config="$(dirname "$0")/icewm-preferences" &
  else
    "$wm" &
  fi
  # A client that maps while the window manager is still taking over the screen can be left unmanaged as a 1x1
  # window (seen with openbox and xterm). Wait, briefly and boundedly, until the manager announces itself.
  if command -v xprop >/dev/null 2>&1; then
    i=0
    while [ $i -lt 50 ] && ! xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q 'window id'; do
      sleep 0.05; i=$((i + 1))
    done
  fi
fi
# A UTF-8 terminal (the locale is UTF-8, so typed ä ö ü € reach the shell) with a scalable font that has the glyphs.
exec xterm -geometry 80x24+40+40 -title "$USER@$(hostname)" -fa 'DejaVu Sans Mono' -fs 11 -ls
