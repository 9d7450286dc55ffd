// Offline cache: every file of the build is stored on the first visit (files.json); requests go
// to the network first and fall back to the cache, so the page works offline afterwards.
const CACHE = 'fas-tf-web';

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const files = await (await fetch('./files.json', {cache: 'no-store'})).json();
    await (await caches.open(CACHE)).addAll(files);
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    try {
      const response = await fetch(request);
      if (response.ok) await (await caches.open(CACHE)).put(request, response.clone());
      return response;
    } catch (err) {
      const hit = await caches.match(request, {ignoreSearch: request.mode === 'navigate'});
      if (hit) return hit;
      throw err;
    }
  })());
});
