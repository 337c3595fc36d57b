// calmcue service worker: shows manager alerts pushed by the companion (companion/push.py), even
// with the dashboard closed and the phone locked. Scope: the whole dashboard (served at /sw.js).
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

self.addEventListener("push", (e) => {
  let m;
  try { m = e.data ? e.data.json() : {}; } catch (err) { m = { title: e.data.text() }; }
  e.waitUntil((async () => {
    const open = !m.state || m.state === "open";
    // one notification per alert: its acknowledgement replaces it, quietly
    await self.registration.showNotification(m.title || "calmcue alert", {
      body: m.body || "", tag: "alert-" + m.id, data: m, renotify: open, silent: !open,
      requireInteraction: open, vibrate: open ? [300, 100, 300, 100, 300] : undefined,
      icon: "/static/icon-192.png", badge: "/static/icon-192.png",
    });
    const pages = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    pages.forEach((p) => p.postMessage({ type: "push", alert: m }));
  })());
});

self.addEventListener("notificationclick", (e) => {
  e.notification.close();
  const url = (e.notification.data && e.notification.data.url) || "/";
  e.waitUntil((async () => {
    const pages = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    if (pages.length) return pages[0].focus();
    return self.clients.openWindow(url);
  })());
});
