/**
 * Debian's Chromium, headless, driven by playwright-core (which downloads no browser of its own). The flags keep it
 * off the network: this machine reaches no host but loopback and the package registries.
 */
import { chromium, type Browser } from 'playwright-core';

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}
