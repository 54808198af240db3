// noVNC's RFB with two private methods wrapped (both checked at load; noVNC is pinned and bundled at build time).
//
// _screenSize: noVNC asks the server for floor(area) but then compares the fractional area (browser zoom, a toolbar
// of 31.5 px) with the desktop's integer size, finds them different and asks again, ten times a second, forever.
// Whole pixels here make the comparison true once the desktop has the size it asked for.
//
// _handleExtendedDesktopSize: the two events the viewer's resize policy needs and noVNC does not emit. An ExtendedDesktopSize
// update carries a reason: 1 = this client asked for the new size, 2 = another client did (RFC 6143 §7.8.2). noVNC
// reads it in _handleExtendedDesktopSize and keeps it to itself; this subclass reads the same field first, then
// dispatches 'localresize' (our request was applied) or 'remoteresize' (another viewer's was). The method is private
// to noVNC, so it is checked at load: without it the viewer still works, with noVNC's own policy (last resize wins).
//
// _handleMessage: noVNC pauses reading while its display decodes an image (a JPEG rectangle) and resumes when the
// decode is done, without asking whether the connection ended meanwhile. A connection that drops during a decode
// (the desktop ended, a network hiccup, a reconnect) then hands the bytes still queued to a disconnected RFB, which
// logs "Got data while disconnected" as an error. Those bytes belong to a connection that is over: they are dropped
// here, silently. Upstream noVNC has the same fix under review ("Discard late display data if disconnected").
import RFB from '@novnc/novnc';

for (const method of ['_handleExtendedDesktopSize', '_screenSize', '_handleMessage']) {
  if (typeof RFB.prototype[method] !== 'function') console.warn(`vncdispatch: this noVNC has no ${method}; review rfb-viewer.js`);
}

export class ViewerRFB extends RFB {
  _handleMessage() {
    if (this._rfbConnectionState === 'disconnected') return;
    super._handleMessage();
  }

  _screenSize() {
    const size = super._screenSize();
    return { w: Math.floor(size.w), h: Math.floor(size.h) };
  }

  _handleExtendedDesktopSize() {
    const reason = this._FBU?.x;
    const status = this._FBU?.y;
    const done = super._handleExtendedDesktopSize();
    // false: the message is not complete yet, and noVNC calls again when more bytes arrive.
    if (done) {
      if (reason === 2) this.dispatchEvent(new CustomEvent('remoteresize'));
      else if (reason === 1 && status === 0) this.dispatchEvent(new CustomEvent('localresize'));
    }
    return done;
  }
}
