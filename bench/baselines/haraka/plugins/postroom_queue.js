'use strict'
// postroom_queue: Haraka doing what Postroom's no-filter path does, so the benchmark has a real peer.
//
// - lookup_rdns: answered here with the client's IP literal, so Haraka's Connection never calls
//   dns.reverse() (it does, per connection, unless a plugin answers this hook; there is no setting for it).
// - rcpt: accept the configured domain and its subdomains (support+N@tenantK.helpdesk.test), refuse the rest.
// - queue: spool the message durably (write to tmp/, fsync, rename into incoming/, fsync the directory),
//   parse the MIME with mailparser's simpleParser, build the JSON ticket (valid against inbound/schema/ticket-1.json), POST
//   it to the webhook over a keep-alive http.Agent, signed as Postroom signs it
//   (X-Postroom-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>), and answer 250 only
//   once the webhook answered 2xx; 4xx (temporary: Haraka's DENYSOFT, 450) otherwise. The spool file is removed once delivered.
//
// Settings: config/postroom_queue.ini. Loaded by Haraka from <instance>/plugins/; `mailparser` resolves from
// the node_modules Haraka was installed into (bench/.haraka/node_modules).

const crypto = require('node:crypto')
const fs = require('node:fs')
const fsp = require('node:fs/promises')
const http = require('node:http')
const path = require('node:path')
const { URL } = require('node:url') // Haraka's plugin sandbox has no URL global
const { simpleParser } = require('mailparser')

const PARSER_OPTIONS = { skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true }

exports.register = function () {
    const cfg = this.config.get('postroom_queue.ini').main
    const url = new URL(cfg.url)
    this.settings = {
        domain: cfg.domain.toLowerCase(),
        host: url.hostname,
        port: Number(url.port || 80),
        path: url.pathname + url.search,
        secret: fs.readFileSync(cfg.secret_file, 'utf8').trim(),
        spool: cfg.spool_dir,
        timeout: Number(cfg.timeout_ms || 30000),
        maxInline: Number(cfg.max_inline_attachment_bytes || 10485760),
    }
    for (const sub of ['tmp', 'incoming']) {
        fs.mkdirSync(path.join(cfg.spool_dir, sub), { recursive: true })
    }
    this.agent = new http.Agent({ keepAlive: true, maxSockets: Number(cfg.max_sockets || 16) })
    this.register_hook('lookup_rdns', 'no_rdns')
    this.register_hook('rcpt', 'rcpt_domain')
    this.register_hook('queue', 'queue_webhook')
}

exports.no_rdns = function (next, connection) {
    next(OK, connection.remote.ip)
}

exports.rcpt_domain = function (next, connection, params) {
    const host = (params[0].host || '').toLowerCase()
    const domain = this.settings.domain
    if (host === domain || host.endsWith(`.${domain}`)) return next(OK)
    next(DENY, 'relay access denied')
}

exports.queue_webhook = function (next, connection) {
    const txn = connection.transaction
    txn.message_stream.get_data((raw) => {
        this.deliver(connection, txn, raw).then(
            () => next(OK, `Ok: queued as ${txn.uuid}`),
            (err) => {
                connection.logerror(this, `not delivered: ${err.message}`)
                next(DENYSOFT, 'webhook not reachable, try again later')
            },
        )
    })
}

exports.deliver = async function (connection, txn, raw) {
    const s = this.settings
    const id = txn.uuid
    const envelope = {
        mail_from: txn.mail_from ? txn.mail_from.address : '', // a getter in @haraka/email-address 3
        rcpt_to: txn.rcpt_to.map((r) => r.address),
        client_ip: connection.remote.ip,
        helo: connection.hello.host || '',
        tls: Boolean(connection.tls && connection.tls.enabled),
    }
    const spooled = await spool(s.spool, id, envelope, raw)
    const parsed = await simpleParser(raw, PARSER_OPTIONS)
    const body = Buffer.from(JSON.stringify(ticket(id, envelope, parsed, raw, s.maxInline)))
    const status = await post(this.agent, s, body, id, tenantOf(envelope.rcpt_to[0] || ''))
    if (status < 200 || status >= 300) throw new Error(`webhook answered ${status}`)
    fs.unlink(spooled, () => {})
}

async function spool(dir, id, envelope, raw) {
    const tmp = path.join(dir, 'tmp', id)
    const final = path.join(dir, 'incoming', id)
    const fh = await fsp.open(tmp, 'wx', 0o640)
    try {
        await fh.writev([Buffer.from(`${JSON.stringify(envelope)}\n`), raw])
        await fh.sync()
    } finally {
        await fh.close()
    }
    await fsp.rename(tmp, final)
    const dh = await fsp.open(path.join(dir, 'incoming'), 'r')
    try {
        await dh.sync()
    } finally {
        await dh.close()
    }
    return final
}

function tenantOf(rcpt) {
    const domain = rcpt.slice(rcpt.lastIndexOf('@') + 1).toLowerCase()
    return domain.split('.')[0]
}

function mailboxes(field) {
    if (!field) return []
    const out = []
    for (const list of Array.isArray(field) ? field : [field]) {
        for (const a of list.value || []) {
            for (const m of a.group || [a]) {
                if (m.address) out.push({ name: m.name || null, email: m.address })
            }
        }
    }
    return out
}

function bareId(value) {
    return value ? String(value).replace(/^\s*<|>\s*$/g, '') || null : null
}

function ticket(id, envelope, parsed, raw, maxInline) {
    const rcpt = envelope.rcpt_to[0] || ''
    const local = rcpt.slice(0, rcpt.lastIndexOf('@'))
    const plus = local.indexOf('+')
    const refs = parsed.references
    return {
        schema: 'postroom.ticket/1',
        id,
        received_at: new Date().toISOString(),
        tenant: tenantOf(rcpt),
        mailbox: plus < 0 ? local : local.slice(0, plus),
        mailbox_hash: plus < 0 ? null : local.slice(plus + 1),
        envelope,
        message_id: bareId(parsed.messageId),
        in_reply_to: bareId(parsed.inReplyTo),
        references: (Array.isArray(refs) ? refs : refs ? [refs] : []).map(bareId),
        date: parsed.date ? parsed.date.toISOString() : null,
        subject: parsed.subject ?? null,
        from: mailboxes(parsed.from)[0] || null,
        reply_to: mailboxes(parsed.replyTo),
        to: mailboxes(parsed.to),
        cc: mailboxes(parsed.cc),
        text: parsed.text ?? null,
        html: parsed.html || null,
        stripped_text_reply: null,
        attachments: parsed.attachments.map((a) => {
            const truncated = a.content.length > maxInline
            return {
                filename: a.filename || 'attachment',
                content_type: a.contentType,
                size: a.content.length,
                content_id: bareId(a.contentId),
                disposition: a.contentDisposition === 'inline' ? 'inline' : 'attachment',
                sha256: crypto.createHash('sha256').update(a.content).digest('hex'),
                content_base64: truncated ? null : a.content.toString('base64'),
                truncated,
            }
        }),
        headers: parsed.headerLines.map(({ line }) => {
            const colon = line.indexOf(':')
            return [line.slice(0, colon), line.slice(colon + 1).replace(/\r?\n[ \t]+/g, ' ').trim()]
        }),
        auto_submitted: false,
        auto_submitted_reason: null,
        bounce: { is_bounce: false, recipients: [] },
        verdicts: [],
        auth: null,
        spam: null,
        virus: null,
        raw: {
            size: raw.length,
            sha256: crypto.createHash('sha256').update(raw).digest('hex'),
            content_base64: null,
        },
        parse_error: null,
    }
}

function post(agent, s, body, id, tenant) {
    const t = Math.floor(Date.now() / 1000)
    const mac = crypto.createHmac('sha256', s.secret).update(`${t}.`).update(body).digest('hex')
    return new Promise((resolve, reject) => {
        const req = http.request(
            {
                agent,
                host: s.host,
                port: s.port,
                path: s.path,
                method: 'POST',
                headers: {
                    'Content-Type': 'application/json',
                    'Content-Length': body.length,
                    'X-Postroom-Signature': `t=${t},v1=${mac}`,
                    'Idempotency-Key': id,
                    'X-Postroom-Attempt': '1',
                    'X-Postroom-Tenant': tenant,
                },
            },
            (res) => {
                res.resume() // drain the answer so the socket goes back to the pool
                res.on('end', () => resolve(res.statusCode))
                res.on('error', reject)
            },
        )
        req.setTimeout(s.timeout, () => req.destroy(new Error('webhook timeout')))
        req.on('error', reject)
        req.end(body)
    })
}
