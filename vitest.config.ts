import { defineConfig } from 'vitest/config';

// Every run shuffles files and tests, so a test that leans on another's leftovers fails here rather than in someone's
// `vitest run -t`. The seed is printed; VD_TEST_SEED=N replays an order.
const seed = Number(process.env.VD_TEST_SEED ?? Math.floor(Math.random() * 1_000_000));
if (!process.env.VITEST_WORKER_ID) console.log(`test order: shuffled with seed ${seed} (VD_TEST_SEED=${seed} replays it)`);

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    // Integration suites start real agents, Xvnc servers and Chromium on a 2-core machine: one file at a time keeps
    // them from starving each other; tests inside a file still share one set of servers.
    fileParallelism: false,
    sequence: { shuffle: { files: true, tests: true }, seed },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // The JSON report lets .ci/run print a plain 'N passed, N failed, N skipped' line.
    reporters: ['default', ['json', { outputFile: 'test-artifacts/vitest-report.json' }]],
  },
});
