// ProgressDB console: plain browser JavaScript, no build step. Every value from the server is
// put in the page with textContent, never as HTML.
(function () {
  'use strict';

  var $ = function (id) {
    return document.getElementById(id);
  };
  var state = {
    me: null,
    projects: [],
    project: null,
    tab: 'keys',
    chart: null,
    threadCursor: null,
    thread: null,
    beforeSeq: null,
  };

  // ---------- helpers ----------
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs)
      for (var k in attrs) {
        if (k === 'text') el.textContent = attrs[k];
        else if (k === 'class') el.className = attrs[k];
        else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), attrs[k]);
        else if (attrs[k] !== null && attrs[k] !== undefined) el.setAttribute(k, attrs[k]);
      }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return el;
  }
  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }
  function cookie(name) {
    var m = document.cookie.match(new RegExp('(?:^|; )' + name + '=([^;]*)'));
    return m ? decodeURIComponent(m[1]) : '';
  }
  function fmtNumber(n) {
    return Number(n).toLocaleString();
  }
  function fmtTime(iso) {
    if (!iso) return '—';
    var d = new Date(iso),
      s = (Date.now() - d.getTime()) / 1000;
    if (s < 45) return 'just now';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    if (s < 86400 * 30) return Math.round(s / 86400) + ' d ago';
    return d.toLocaleDateString();
  }
  function timeEl(iso) {
    return h('span', { title: iso ? new Date(iso).toLocaleString() : '', text: fmtTime(iso) });
  }

  var toastTimer = null;
  function toast(message, isError) {
    var t = $('toast');
    t.textContent = message;
    t.className = 'toast' + (isError ? ' error' : '');
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(
      function () {
        t.hidden = true;
      },
      isError ? 6000 : 2500,
    );
  }

  function ApiError(status, problem) {
    this.status = status;
    this.problem = problem || {};
    this.message = (problem && (problem.detail || problem.title)) || 'Request failed (' + status + ')';
  }

  function api(method, path, body) {
    var headers = { accept: 'application/json' };
    if (method !== 'GET') headers['x-csrf-token'] = cookie('pdb_csrf');
    if (body !== undefined) headers['content-type'] = 'application/json';
    return fetch(path, {
      method: method,
      headers: headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (res) {
      if (res.status === 204) return null;
      return res.text().then(function (text) {
        var data = text ? JSON.parse(text) : null;
        if (!res.ok) {
          if (res.status === 401 && path !== '/v1/me') showSignIn();
          throw new ApiError(res.status, data);
        }
        return data;
      });
    });
  }
  function fail(e) {
    toast(e && e.message ? e.message : 'Something went wrong.', true);
  }

  function copy(text, label) {
    var done = function () {
      toast((label || 'Copied') + ' to the clipboard');
    };
    if (navigator.clipboard && window.isSecureContext)
      navigator.clipboard.writeText(text).then(done, function () {
        legacyCopy(text);
        done();
      });
    else {
      legacyCopy(text);
      done();
    }
  }
  function legacyCopy(text) {
    var ta = h('textarea', { class: 'mono' });
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    try {
      document.execCommand('copy');
    } catch (e) {
      /* the value stays selectable */
    }
    document.body.removeChild(ta);
  }

  function confirmAction(title, text, okLabel) {
    return new Promise(function (resolve) {
      var dlg = $('confirm');
      $('confirm-title').textContent = title;
      $('confirm-text').textContent = text;
      $('confirm-ok').textContent = okLabel || 'Confirm';
      dlg.returnValue = '';
      dlg.addEventListener('close', function onClose() {
        dlg.removeEventListener('close', onClose);
        resolve(dlg.returnValue === 'ok');
      });
      dlg.showModal();
    });
  }

  // ---------- views ----------
  function show(view) {
    $('loading').hidden = view !== 'loading';
    $('signin').hidden = view !== 'signin';
    $('app').hidden = view !== 'app';
    $('account').hidden = view !== 'app';
  }

  var SIGNIN_MESSAGES = {
    not_configured: 'Google sign-in is not configured on this server (GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET).',
    access_denied: 'Sign-in was cancelled at the provider.',
    signin_failed: 'Sign-in failed. Try again.',
    provider_error: 'The sign-in provider returned an error. Try again.',
    token_error: 'The sign-in provider refused the authorization code. Start again.',
    provider_unreachable: 'Could not complete sign-in with the provider. Try again.',
    state_mismatch: 'The sign-in request expired or did not start here. Start again.',
  };

  function showSignIn() {
    show('signin');
    var params = new URLSearchParams(location.search);
    var err = params.get('signin_error');
    if (err) {
      // Fixed texts only: the URL is anyone's to write, so nothing from it is shown verbatim.
      $('signin-error').textContent = SIGNIN_MESSAGES[err] || SIGNIN_MESSAGES.signin_failed;
      $('signin-error').hidden = false;
    }
    api('GET', '/auth/providers')
      .then(function (p) {
        var ok = p && p.google && p.google.configured;
        $('signin-google').hidden = !ok;
        $('signin-unconfigured').hidden = ok;
      })
      .catch(function () {
        /* keep the button */
      });
  }

  function renderAccount() {
    var me = state.me;
    $('account-name').textContent = me.name || me.email || 'Developer';
    $('account-email').textContent = me.name && me.email ? me.email : '';
    var label = (me.name || me.email || '?').trim();
    $('account-initials').textContent = label
      .split(/\s+/)
      .slice(0, 2)
      .map(function (w) {
        return w.charAt(0).toUpperCase();
      })
      .join('');
    var img = $('account-avatar');
    img.onerror = function () {
      img.hidden = true;
      $('account-initials').hidden = false;
    };
    img.onload = function () {
      img.hidden = false;
      $('account-initials').hidden = true;
    };
    if (me.avatar_url) img.src = me.avatar_url;
  }

  function renderProjects() {
    var list = $('project-list');
    clear(list);
    state.projects.forEach(function (p) {
      var btn = h(
        'button',
        {
          type: 'button',
          class: state.project && state.project.id === p.id ? 'active' : '',
          'data-project-id': p.id,
          onclick: function () {
            openProject(p.id);
          },
        },
        h('span', { text: p.name }),
        h('span', { class: 'pid', text: p.id }),
      );
      list.appendChild(h('li', null, btn));
    });
    $('no-projects').hidden = state.projects.length > 0;
    $('empty-state').hidden = state.projects.length > 0 || !!state.project;
  }

  function loadProjects() {
    return api('GET', '/v1/projects').then(function (r) {
      state.projects = r.data;
      renderProjects();
    });
  }

  function openProject(id) {
    return api('GET', '/v1/projects/' + encodeURIComponent(id))
      .then(function (p) {
        state.project = p;
        state.thread = null;
        history.replaceState(null, '', '/console#' + encodeURIComponent(p.id));
        $('project').hidden = false;
        $('empty-state').hidden = true;
        $('project-name').textContent = p.name;
        $('project-id').textContent = p.id;
        $('new-key-banner').hidden = true;
        renderProjects();
        renderSigningSecret(false);
        fillSettings();
        selectTab(state.tab);
      })
      .catch(fail);
  }

  function selectTab(tab) {
    state.tab = tab;
    document.querySelectorAll('.tab').forEach(function (b) {
      b.classList.toggle('active', b.getAttribute('data-tab') === tab);
    });
    document.querySelectorAll('.panel').forEach(function (p) {
      p.hidden = p.getAttribute('data-panel') !== tab;
    });
    if (tab === 'keys') loadKeys();
    if (tab === 'usage') loadUsage();
    if (tab === 'threads') loadThreads(true);
    if (tab === 'webhooks') loadWebhooks();
  }

  // ---------- keys ----------
  function kindLabel(kind) {
    return { secret: 'Secret', publishable: 'Publishable', admin: 'Admin' }[kind] || kind;
  }

  function loadKeys() {
    var p = state.project;
    return api('GET', '/v1/projects/' + encodeURIComponent(p.id) + '/keys')
      .then(function (r) {
        var body = $('keys-body');
        clear(body);
        r.data.forEach(function (k) {
          var revoked = !!k.revoked_at;
          var action = revoked
            ? h('span', { class: 'badge muted', text: 'Revoked ' + fmtTime(k.revoked_at) })
            : h(
                'button',
                {
                  type: 'button',
                  class: 'btn btn-small btn-danger-outline',
                  'data-testid': 'revoke-key',
                  'data-key-id': k.id,
                  onclick: function () {
                    revokeKey(k);
                  },
                },
                'Revoke',
              );
          body.appendChild(
            h(
              'tr',
              { class: revoked ? 'revoked' : '', 'data-key-id': k.id },
              h('td', null, k.name ? k.name : h('span', { class: 'muted', text: 'Unnamed' })),
              h('td', null, h('span', { class: 'badge ' + k.kind, text: kindLabel(k.kind) })),
              h('td', null, h('span', { class: 'mono', text: k.prefix + '…' })),
              h('td', null, timeEl(k.created_at)),
              h('td', null, k.last_used_at ? timeEl(k.last_used_at) : h('span', { class: 'muted', text: 'Never' })),
              h('td', null, action),
            ),
          );
        });
        $('keys-empty').hidden = r.data.length > 0;
      })
      .catch(fail);
  }

  function revokeKey(k) {
    confirmAction(
      'Revoke this key?',
      'Apps using “' + (k.name || k.prefix) + '” (' + k.prefix + '…) will get 401 from now on. This cannot be undone.',
      'Revoke key',
    ).then(function (ok) {
      if (!ok) return;
      api('DELETE', '/v1/projects/' + encodeURIComponent(state.project.id) + '/keys/' + encodeURIComponent(k.id))
        .then(function () {
          toast('Key revoked');
          loadKeys();
        })
        .catch(fail);
    });
  }

  $('new-key-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var kind = $('new-key-kind-select').value;
    api('POST', '/v1/projects/' + encodeURIComponent(state.project.id) + '/keys', {
      name: $('new-key-name').value.trim(),
      kind: kind,
    })
      .then(function (k) {
        $('new-key-value').value = k.key;
        $('new-key-kind').textContent = kindLabel(k.kind) + (k.name ? ' · ' + k.name : '');
        $('new-key-kind').className = 'badge ' + k.kind;
        $('new-key-banner').hidden = false;
        $('new-key-name').value = '';
        $('new-key-value').focus();
        $('new-key-value').select();
        loadKeys();
      })
      .catch(fail);
  });
  $('new-key-copy').addEventListener('click', function () {
    copy($('new-key-value').value, 'Key copied');
  });
  $('new-key-done').addEventListener('click', function () {
    $('new-key-value').value = '';
    $('new-key-banner').hidden = true;
  });

  // ---------- webhooks ----------
  var deliveryCursor = null;
  function hooksPath() {
    return '/v1/projects/' + encodeURIComponent(state.project.id);
  }
  function loadWebhooks() {
    loadEndpoints();
    loadDeliveries(true);
  }
  function hookStatus(e) {
    if (!e.enabled) return h('span', { class: 'badge muted', title: e.disabled_reason || '', text: 'Disabled' });
    var hl = e.health;
    // Slow or failing endpoints stand out: failures in the last hour, dead letters, slow answers.
    if (hl && (hl.failing_last_hour > 0 || hl.dead > 0))
      return h('span', { class: 'badge danger', 'data-testid': 'hook-failing', text: 'Failing' });
    if (hl && hl.max_duration_ms_last_hour !== null && hl.max_duration_ms_last_hour > 5000)
      return h('span', { class: 'badge warn', text: 'Slow' });
    return h('span', { class: 'badge ok', text: 'Healthy' });
  }
  function loadEndpoints() {
    return api('GET', hooksPath() + '/webhooks')
      .then(function (r) {
        var body = $('hooks-body');
        clear(body);
        r.data.forEach(function (e) {
          var hl = e.health || {};
          var lastHour =
            (hl.delivered_last_hour || 0) +
            ' ok' +
            (hl.avg_duration_ms_last_hour !== null && hl.avg_duration_ms_last_hour !== undefined
              ? ' · avg ' + Math.round(hl.avg_duration_ms_last_hour) + ' ms'
              : '');
          body.appendChild(
            h(
              'tr',
              { 'data-endpoint-id': e.id },
              h(
                'td',
                null,
                h('span', { class: 'mono', text: e.url }),
                e.description ? h('div', { class: 'muted small', text: e.description }) : null,
              ),
              h('td', { class: 'small', text: e.event_types ? e.event_types.join(', ') : 'all' }),
              h('td', null, hookStatus(e)),
              h('td', { text: fmtNumber(hl.pending || 0) }),
              h('td', { 'data-testid': 'hook-dead', text: fmtNumber(hl.dead || 0) }),
              h('td', { class: 'small', text: lastHour }),
              h(
                'td',
                { class: 'row end' },
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'btn btn-small',
                    onclick: function () {
                      updateEndpoint(e, { enabled: !e.enabled }, e.enabled ? 'Endpoint disabled' : 'Endpoint enabled');
                    },
                  },
                  e.enabled ? 'Disable' : 'Enable',
                ),
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'btn btn-small',
                    onclick: function () {
                      rotateHookSecret(e);
                    },
                  },
                  'Rotate secret',
                ),
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'btn btn-small btn-danger-outline',
                    onclick: function () {
                      deleteEndpoint(e);
                    },
                  },
                  'Delete',
                ),
              ),
            ),
          );
        });
        $('hooks-empty').hidden = r.data.length > 0;
      })
      .catch(fail);
  }
  function showHookSecret(secret) {
    $('new-hook-secret').value = secret;
    $('new-hook-banner').hidden = false;
    $('new-hook-secret').focus();
    $('new-hook-secret').select();
  }
  function updateEndpoint(e, patch, message) {
    api('PATCH', hooksPath() + '/webhooks/' + encodeURIComponent(e.id), patch)
      .then(function () {
        toast(message);
        loadEndpoints();
      })
      .catch(fail);
  }
  function rotateHookSecret(e) {
    confirmAction(
      'Rotate this endpoint’s secret?',
      'For the next 24 hours deliveries carry signatures with both the old and the new secret, so your receiver can switch over.',
      'Rotate',
    ).then(function (ok) {
      if (!ok) return;
      api('POST', hooksPath() + '/webhooks/' + encodeURIComponent(e.id) + '/secret/rotate', {})
        .then(function (r) {
          showHookSecret(r.secret);
          loadEndpoints();
        })
        .catch(fail);
    });
  }
  function deleteEndpoint(e) {
    confirmAction(
      'Delete this endpoint?',
      e.url + ' will receive nothing more; its deliveries are removed.',
      'Delete',
    ).then(function (ok) {
      if (!ok) return;
      api('DELETE', hooksPath() + '/webhooks/' + encodeURIComponent(e.id))
        .then(function () {
          toast('Endpoint deleted');
          loadWebhooks();
        })
        .catch(fail);
    });
  }
  function loadDeliveries(reset) {
    if (reset) {
      deliveryCursor = null;
      clear($('deliveries-body'));
    }
    var q = '?limit=25';
    var status = $('deliveries-status').value;
    if (status) q += '&status=' + encodeURIComponent(status);
    if (deliveryCursor) q += '&cursor=' + encodeURIComponent(deliveryCursor);
    return api('GET', hooksPath() + '/webhook-deliveries' + q)
      .then(function (r) {
        var body = $('deliveries-body');
        r.data.forEach(function (d) {
          var replay =
            d.status === 'dead'
              ? h(
                  'button',
                  {
                    type: 'button',
                    class: 'btn btn-small',
                    'data-testid': 'replay-delivery',
                    onclick: function () {
                      api('POST', hooksPath() + '/webhook-deliveries/' + encodeURIComponent(d.id) + '/replay')
                        .then(function () {
                          toast('Replay queued');
                          loadWebhooks();
                        })
                        .catch(fail);
                    },
                  },
                  'Replay',
                )
              : null;
          var badge = { delivered: 'ok', pending: 'warn', dead: 'danger' }[d.status] || '';
          body.appendChild(
            h(
              'tr',
              { 'data-delivery-id': d.id },
              h('td', { class: 'mono small', text: d.event_type }),
              h('td', { class: 'small', text: d.thread_id + ' · ' + d.seq }),
              h('td', null, h('span', { class: 'badge ' + badge, text: d.status })),
              h('td', {
                class: 'small',
                'data-testid': 'delivery-response',
                title: d.last_error || '',
                text: d.last_status_code !== null ? String(d.last_status_code) : d.last_error ? 'error' : '–',
              }),
              h('td', { text: String(d.attempts) }),
              h('td', { class: 'small', text: d.last_duration_ms !== null ? d.last_duration_ms + ' ms' : '–' }),
              h('td', null, timeEl(d.created_at)),
              h('td', null, replay),
            ),
          );
        });
        deliveryCursor = r.next_cursor;
        $('deliveries-more').hidden = !r.next_cursor;
        $('deliveries-empty').hidden = body.children.length > 0;
      })
      .catch(fail);
  }
  $('new-hook-form').addEventListener('submit', function (e) {
    e.preventDefault();
    $('hook-error').hidden = true;
    var events = $('new-hook-events')
      .value.split(',')
      .map(function (s) {
        return s.trim();
      })
      .filter(Boolean);
    api('POST', hooksPath() + '/webhooks', {
      url: $('new-hook-url').value.trim(),
      description: $('new-hook-description').value.trim(),
      event_types: events.length ? events : null,
    })
      .then(function (r) {
        $('new-hook-url').value = '';
        $('new-hook-events').value = '';
        $('new-hook-description').value = '';
        showHookSecret(r.secret);
        loadEndpoints();
      })
      .catch(function (err) {
        $('hook-error').textContent = err && err.message ? err.message : 'Could not add the endpoint.';
        $('hook-error').hidden = false;
      });
  });
  $('new-hook-copy').addEventListener('click', function () {
    copy($('new-hook-secret').value, 'Secret copied');
  });
  $('new-hook-done').addEventListener('click', function () {
    $('new-hook-secret').value = '';
    $('new-hook-banner').hidden = true;
  });
  $('hooks-refresh').addEventListener('click', loadWebhooks);
  $('deliveries-status').addEventListener('change', function () {
    loadDeliveries(true);
  });
  $('deliveries-more').addEventListener('click', function () {
    loadDeliveries(false);
  });

  // ---------- signing secret ----------
  var secretShown = false;
  function renderSigningSecret(reveal) {
    secretShown = reveal;
    var p = state.project;
    $('signing-secret').value = reveal ? p.signing_secret : p.signing_secret.slice(0, 3) + '•'.repeat(24);
    $('signing-reveal').textContent = reveal ? 'Hide' : 'Reveal';
    var grace = p.previous_signing_secret_expires_at;
    $('signing-grace').hidden = !(grace && new Date(grace) > new Date());
    if (grace)
      $('signing-grace').textContent =
        'The previous secret keeps verifying until ' + new Date(grace).toLocaleString() + '.';
  }
  $('signing-reveal').addEventListener('click', function () {
    renderSigningSecret(!secretShown);
  });
  $('signing-copy').addEventListener('click', function () {
    copy(state.project.signing_secret, 'Signing secret copied');
  });
  $('signing-rotate').addEventListener('click', function () {
    confirmAction(
      'Rotate the signing secret?',
      'A new secret is generated. Signatures made with the current one keep verifying for a grace period, so you can roll out the new one.',
      'Rotate',
    ).then(function (ok) {
      if (!ok) return;
      api('POST', '/v1/projects/' + encodeURIComponent(state.project.id) + '/signing-secret/rotate')
        .then(function (p) {
          state.project = p;
          renderSigningSecret(true);
          toast('Signing secret rotated');
        })
        .catch(fail);
    });
  });

  // ---------- usage ----------
  function loadUsage() {
    return api('GET', '/v1/projects/' + encodeURIComponent(state.project.id) + '/usage?hours=24')
      .then(function (r) {
        var labels = r.data.map(function (d) {
          return new Date(d.hour).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
        });
        var requests = r.data.map(function (d) {
          return d.requests;
        });
        var messages = r.data.map(function (d) {
          return d.messages;
        });
        $('usage-requests').textContent = fmtNumber(
          requests.reduce(function (a, b) {
            return a + b;
          }, 0),
        );
        $('usage-messages').textContent = fmtNumber(
          messages.reduce(function (a, b) {
            return a + b;
          }, 0),
        );
        if (typeof window.Chart !== 'function') return;
        if (state.chart) state.chart.destroy();
        state.chart = new window.Chart($('usage-chart'), {
          data: {
            labels: labels,
            datasets: [
              {
                type: 'bar',
                label: 'Requests',
                data: requests,
                backgroundColor: 'rgba(79, 70, 229, .75)',
                borderRadius: 4,
                yAxisID: 'y',
              },
              {
                type: 'line',
                label: 'New messages',
                data: messages,
                borderColor: '#12b76a',
                backgroundColor: '#12b76a',
                tension: 0.3,
                pointRadius: 2,
                yAxisID: 'y',
              },
            ],
          },
          options: {
            responsive: true,
            maintainAspectRatio: false,
            animation: false,
            interaction: { mode: 'index', intersect: false },
            plugins: { legend: { position: 'bottom', labels: { usePointStyle: true } } },
            scales: { x: { grid: { display: false } }, y: { beginAtZero: true, ticks: { precision: 0 } } },
          },
        });
      })
      .catch(fail);
  }
  $('usage-refresh').addEventListener('click', loadUsage);

  // ---------- thread browser ----------
  function projectPath() {
    return '/v1/projects/' + encodeURIComponent(state.project.id);
  }

  function loadThreads(reset) {
    if (reset) {
      state.threadCursor = null;
      clear($('thread-list'));
    }
    var q = '?limit=50' + (state.threadCursor ? '&cursor=' + encodeURIComponent(state.threadCursor) : '');
    return api('GET', projectPath() + '/threads' + q)
      .then(function (r) {
        r.data.forEach(function (t) {
          var btn = h(
            'button',
            {
              type: 'button',
              'data-thread-id': t.id,
              class: state.thread === t.id ? 'active' : '',
              onclick: function () {
                openThread(t);
              },
            },
            h('span', { class: 't-title', text: t.title || t.id }),
            h('span', { class: 'badge', text: t.type }),
            h('span', { class: 't-meta', text: t.id + ' · seq ' + t.last_seq + ' · ' + fmtTime(t.last_activity_at) }),
          );
          $('thread-list').appendChild(h('li', null, btn));
        });
        state.threadCursor = r.next_cursor;
        $('threads-more').hidden = !r.next_cursor;
        $('threads-empty').hidden = $('thread-list').children.length > 0;
      })
      .catch(fail);
  }
  $('threads-refresh').addEventListener('click', function () {
    loadThreads(true);
    if (state.thread) openThread({ id: state.thread, title: $('thread-title').textContent });
  });
  $('threads-more').addEventListener('click', function () {
    loadThreads(false);
  });

  function renderBody(body) {
    if (body && typeof body === 'object' && typeof body.text === 'string' && Object.keys(body).length === 1)
      return h('p', { class: 'msg-body text', text: body.text });
    return h('pre', { class: 'msg-body', text: JSON.stringify(body, null, 2) });
  }

  function messageEl(m) {
    var versionsBox = h('div', { class: 'versions', hidden: '' });
    var head = h(
      'div',
      { class: 'msg-head' },
      h('span', { class: 'author', text: m.author }),
      h('span', { class: 'muted', text: '#' + m.seq }),
      timeEl(m.created_at),
      m.version > 1
        ? h('span', { class: 'badge', text: 'v' + m.version + (m.deleted ? ' · deleted' : ' · edited') })
        : null,
      h(
        'button',
        {
          type: 'button',
          class: 'btn-link small',
          'data-testid': 'show-versions',
          onclick: function () {
            toggleVersions(m, versionsBox);
          },
        },
        'History',
      ),
    );
    return h(
      'div',
      { class: 'msg' + (m.deleted ? ' deleted' : ''), 'data-message-id': m.id },
      head,
      m.deleted ? h('p', { class: 'msg-body text muted', text: 'Deleted' }) : renderBody(m.body),
      versionsBox,
    );
  }

  function toggleVersions(m, box) {
    if (!box.hidden) {
      box.hidden = true;
      return;
    }
    api(
      'GET',
      projectPath() +
        '/threads/' +
        encodeURIComponent(m.thread_id) +
        '/messages/' +
        encodeURIComponent(m.id) +
        '/versions?limit=200',
    )
      .then(function (r) {
        clear(box);
        r.data.forEach(function (v) {
          box.appendChild(
            h(
              'div',
              { class: 'small' },
              h(
                'div',
                { class: 'msg-head' },
                h('strong', { text: 'v' + v.version }),
                h('span', { class: 'muted', text: '#' + v.seq + (v.actor ? ' by ' + v.actor : '') }),
                timeEl(v.created_at),
                v.deleted ? h('span', { class: 'badge muted', text: 'delete' }) : null,
              ),
              v.deleted ? null : renderBody(v.body),
            ),
          );
        });
        box.hidden = false;
      })
      .catch(fail);
  }

  function openThread(t) {
    state.thread = t.id;
    state.beforeSeq = null;
    document.querySelectorAll('#thread-list button').forEach(function (b) {
      b.classList.toggle('active', b.getAttribute('data-thread-id') === t.id);
    });
    $('thread-title').textContent = t.title || t.id;
    clear($('message-list'));
    loadMessages();
  }

  function loadMessages() {
    var q =
      '?limit=50' +
      ($('include-deleted').checked ? '&include_deleted=true' : '') +
      (state.beforeSeq ? '&before_seq=' + state.beforeSeq : '');
    var threadId = state.thread;
    return api('GET', projectPath() + '/threads/' + encodeURIComponent(threadId) + '/messages' + q)
      .then(function (r) {
        if (state.thread !== threadId) return;
        var list = $('message-list');
        var first = list.firstChild;
        r.data.forEach(function (m) {
          list.insertBefore(messageEl(m), first);
        });
        if (!list.children.length)
          list.appendChild(h('p', { class: 'muted small', text: 'No messages in this thread.' }));
        state.beforeSeq = r.data.length ? r.data[0].seq : null;
        $('messages-older').hidden = !r.has_more_before;
      })
      .catch(fail);
  }
  $('messages-older').addEventListener('click', loadMessages);
  $('include-deleted').addEventListener('change', function () {
    if (state.thread) openThread({ id: state.thread, title: $('thread-title').textContent });
  });

  // ---------- settings ----------
  function lines(v) {
    return v
      .split(/\r?\n/)
      .map(function (s) {
        return s.trim();
      })
      .filter(Boolean);
  }
  function num(id) {
    var v = $(id).value.trim();
    return v === '' ? null : Number(v);
  }

  function fillSettings() {
    var p = state.project,
      s = p.settings || {},
      rl = s.rate_limits || {};
    $('set-name').value = p.name;
    $('set-origins').value = (s.allowed_origins || []).join('\n');
    $('set-ips').value = (s.ip_allowlist || []).join('\n');
    $('set-encrypted').value = (s.encrypted_fields || []).join('\n');
    ['read', 'write', 'auth'].forEach(function (c) {
      $('rl-' + c + '-limit').value = rl[c] ? rl[c].limit : '';
      $('rl-' + c + '-window').value = rl[c] ? rl[c].window_seconds : '';
    });
    $('set-retention').value = s.retention_days || '';
    $('set-deleted-retention').value = s.deleted_thread_retention_days || '';
    $('set-max-messages').value = s.max_messages_per_thread || '';
    $('settings-error').hidden = true;
  }

  $('settings-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var rate = {};
    ['read', 'write', 'auth'].forEach(function (c) {
      var limit = num('rl-' + c + '-limit'),
        win = num('rl-' + c + '-window');
      if (limit !== null || win !== null)
        rate[c] = { limit: limit === null ? 0 : limit, window_seconds: win === null ? 60 : win };
    });
    var settings = {
      allowed_origins: lines($('set-origins').value),
      ip_allowlist: lines($('set-ips').value),
      encrypted_fields: lines($('set-encrypted').value),
      rate_limits: rate,
      retention_days: num('set-retention'),
      deleted_thread_retention_days: num('set-deleted-retention'),
      max_messages_per_thread: num('set-max-messages'),
    };
    api('PATCH', projectPath(), { name: $('set-name').value.trim(), settings: settings })
      .then(function (p) {
        state.project = p;
        $('project-name').textContent = p.name;
        fillSettings();
        loadProjects();
        toast('Settings saved');
      })
      .catch(function (err) {
        var box = $('settings-error');
        clear(box);
        box.appendChild(h('strong', { text: 'Not saved. ' }));
        var errs = (err.problem && err.problem.errors) || [];
        if (!errs.length) box.appendChild(document.createTextNode(err.message));
        else {
          var ul = h('ul');
          errs.forEach(function (x) {
            ul.appendChild(h('li', { text: x.path.replace(/^body\.(settings\.)?/, '') + ': ' + x.message }));
          });
          box.appendChild(ul);
        }
        box.hidden = false;
      });
  });

  $('delete-project').addEventListener('click', function () {
    var p = state.project;
    confirmAction(
      'Delete “' + p.name + '”?',
      'All of its keys stop working immediately. Its data is kept but no longer reachable.',
      'Delete project',
    ).then(function (ok) {
      if (!ok) return;
      api('DELETE', projectPath())
        .then(function () {
          toast('Project deleted');
          state.project = null;
          $('project').hidden = true;
          history.replaceState(null, '', '/console');
          loadProjects();
        })
        .catch(fail);
    });
  });

  // ---------- projects ----------
  function toggleNewProject(open) {
    $('new-project-form').hidden = !open;
    if (open) $('new-project-name').focus();
  }
  $('new-project-toggle').addEventListener('click', function () {
    toggleNewProject($('new-project-form').hidden);
  });
  $('new-project-cancel').addEventListener('click', function () {
    toggleNewProject(false);
  });
  $('empty-create').addEventListener('click', function () {
    toggleNewProject(true);
  });
  $('new-project-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var name = $('new-project-name').value.trim();
    if (!name) return;
    api('POST', '/v1/projects', { name: name })
      .then(function (p) {
        $('new-project-name').value = '';
        toggleNewProject(false);
        state.tab = 'keys';
        return loadProjects().then(function () {
          return openProject(p.id);
        });
      })
      .then(function () {
        toast('Project created. Create an API key to start.');
      })
      .catch(fail);
  });

  document.querySelectorAll('.tab').forEach(function (b) {
    b.addEventListener('click', function () {
      selectTab(b.getAttribute('data-tab'));
    });
  });
  document.querySelectorAll('[data-copy-from]').forEach(function (b) {
    b.addEventListener('click', function () {
      copy($(b.getAttribute('data-copy-from')).textContent, 'Copied');
    });
  });

  $('signout').addEventListener('click', function () {
    fetch('/auth/logout', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'x-csrf-token': cookie('pdb_csrf') },
    }).finally(function () {
      location.href = '/console';
    });
  });

  // ---------- start ----------
  show('loading');
  api('GET', '/v1/me')
    .then(function (me) {
      state.me = me;
      renderAccount();
      show('app');
      if (location.search) history.replaceState(null, '', '/console' + location.hash);
      return loadProjects().then(function () {
        var wanted = decodeURIComponent(location.hash.slice(1));
        var pick =
          state.projects.filter(function (p) {
            return p.id === wanted;
          })[0] || state.projects[0];
        if (pick) return openProject(pick.id);
      });
    })
    .catch(function (e) {
      if (e instanceof ApiError && e.status === 401) showSignIn();
      else {
        showSignIn();
        fail(e);
      }
    });
})();
