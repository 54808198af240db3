// noVNC's RFB, plus the two events the viewer's resize policy needs and noVNC does not emit. An ExtendedDesktopSize
// update carries a reason: 1 = this client asked for the new size, 2 = another client did (RFC 6143 §7.8.2). noVNC
// reads it in _handleExtendedDesktopSize and keeps it to itself; this subclass reads the same field first, then
// dispatches 'localresize' (our request was applied) or 'remoteresize' (another viewer's was). The method is private
// to noVNC, so it is checked at load: without it the viewer still works, with noVNC's own policy (last resize wins).
import RFB from '@novnc/novnc';

const HAS_HOOK = typeof RFB.prototype._handleExtendedDesktopSize === 'function';
if (!HAS_HOOK) console.warn('vncdispatch: this noVNC has no _handleExtendedDesktopSize; another viewer resizing the desktop will not be noticed');

export class ViewerRFB extends RFB {
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
