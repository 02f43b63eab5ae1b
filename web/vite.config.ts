// Vite builds the dashboard into dist/, which web.go embeds into the paygate binary. The output
// is deterministic (content-hashed names, no timestamps) so that the committed dist/ can be
// checked against a fresh build.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  publicDir: "public",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    reportCompressedSize: false,
    // No inline scripts: the gateway's Content-Security-Policy allows only 'self'.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
});
