// Builds the review app into ../static/app, served by the gateway at / (index) and /static/app.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/static/app/',
  build: {
    outDir: '../static/app',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 4000,
    modulePreload: { polyfill: false },
  },
  worker: { format: 'es' },
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: ['dicom-parser'],
  },
});
