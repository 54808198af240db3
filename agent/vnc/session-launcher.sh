#!/bin/sh
# vncdispatch's session launcher: the first process of every desktop session, run as the user (never by the agent
# as root), with DISPLAY and XAUTHORITY set and stdout/stderr in the desktop's log. It looks into the home, which the
# agent never does, and chooses the session script, saying which and why in the log:
#   usage: session-launcher.sh use SCRIPT        run SCRIPT (the operator's --session-script)
#          session-launcher.sh choose FALLBACK   ~/.vnc/xstartup if it passes the checks below, else
#                                                /etc/X11/Xvnc-session if present, else FALLBACK
# ~/.vnc/xstartup is used only like OpenSSH's StrictModes would: the home, ~/.vnc and the script belong to the user
# (the home may be root's), none is a symlink or writable by group or others, and the script is an executable
# regular file. Otherwise another user who could write there could run code in this desktop.
# When the chosen script exits the session ends, so it is exec'd and lives as long as the desktop.

say() { printf 'vncdispatch: %s\n' "$*"; }

# strict PATH OWNERS TYPE WHAT [-L]: prints why PATH is not acceptable, or nothing. Without -L a symlink is refused.
strict() {
  st=$(stat $5 -c '%u %a %F' -- "$1" 2>/dev/null) || { echo "$4 $1 cannot be read"; return; }
  owner=${st%% *}; rest=${st#* }; perm=${rest%% *}; type=${rest#* }
  case "$type" in "$3"*) ;; *) echo "$4 $1 is a $type, not a $3"; return;; esac
  case " $2 " in *" $owner "*) ;; *) echo "$4 $1 belongs to uid $owner, not to you"; return;; esac
  [ $(( 0$perm & 022 )) -eq 0 ] || echo "$4 $1 is writable by group or others (mode $perm)"
}

mode=$1
script=$2
me=$(id -u)

if [ "$mode" = use ]; then
  say "session script: $script (set by the operator with --session-script)"
else
  why=''
  xstartup="$HOME/.vnc/xstartup"
  if [ ! -e "$HOME/.vnc" ] && [ ! -L "$HOME/.vnc" ]; then
    why="there is no $HOME/.vnc"
  else
    why=$(strict "$HOME" "$me 0" directory "your home" -L)
    [ -n "$why" ] || why=$(strict "$HOME/.vnc" "$me" directory "the directory")
    if [ -z "$why" ] && [ ! -e "$xstartup" ] && [ ! -L "$xstartup" ]; then
      why="there is no $xstartup"
    fi
    [ -n "$why" ] || why=$(strict "$xstartup" "$me" 'regular' "the script")
    [ -n "$why" ] || [ -x "$xstartup" ] || why="$xstartup is not executable"
  fi
  if [ -z "$why" ]; then
    script=$xstartup
    say "session script: $xstartup (yours, and only you can change it)"
  elif [ -x /etc/X11/Xvnc-session ]; then
    say "not using ~/.vnc/xstartup: $why"
    script=/etc/X11/Xvnc-session
    say "session script: $script (the system's default session)"
  else
    say "not using ~/.vnc/xstartup: $why"
    say "session script: $script (vncdispatch's fallback session)"
  fi
fi

cd "$HOME" 2>/dev/null || cd /
exec "$script"
