// The intake agent in JavaScript: gathers a caller's name, email and reason
// over several messages, then validates and submits them. The same agent as
// plugins/intake (Rust) and plugins/python/intake, held to the same
// conversation.

import { Agent, CONTINUE, END, Fail, exportAgent, s, say, session, tool } from '../../../guest-sdk/js/agentbox.js';

class Intake extends Agent {
  static NAME = 'intake';
  static VERSION = '0.1.0';
  static DESCRIPTION = "Collects a caller's name, email and reason, then submits them";
  static stateSchema = {
    name: s.string({ minLength: 1, maxLength: 200 }).optional(),
    email: s.string({ maxLength: 254 }).optional(),
    reason: s.string({ minLength: 1, maxLength: 2000 }).optional(),
    turns: s.integer({ minimum: 0 }),
  };

  name = null;
  email = null;
  reason = null;
  turns = 0;

  onStart() {
    const name = session.initialVariable('name');
    this.name = typeof name === 'string' && name.trim() !== '' ? name : null;
    say(this.name ? `Welcome, ${this.name}! I will take down your request.` : 'Welcome! I will take down your request.');
    say(this.progress());
  }

  onMessage(text) {
    this.turns += 1;
    if (text.trim().toLowerCase() === 'submit') return this.submit();
    const learned = this.learn(text);
    say(
      learned.length > 0
        ? `Noted your ${learned.join(' and ')}.`
        : 'I did not catch that. Try "my name is ...", your email address, or "I need ...".',
    );
    say(this.progress());
    return CONTINUE;
  }

  static tools = {
    record_information: tool(
      'Records one field of the request, replacing what was there.',
      {
        field: s.enum(['name', 'email', 'reason']).describe('Which field to record.'),
        value: s.string().describe('Its value.'),
      },
      function ({ field, value }) {
        this[field] = value.trim();
        return { recorded: field, missing: this.missing() };
      },
    ),
    submit_form: tool('Validates the request and submits it, or lists every error.', {}, function () {
      const errors = this.errors();
      if (errors.length > 0) throw new Fail(errors.join('; '));
      return { submitted: true, name: this.name, email: this.email, reason: this.reason };
    }),
  };

  learn(text) {
    const learned = [];
    const lower = text.toLowerCase();
    for (const prefix of ['my name is ', 'i am ', "i'm "]) {
      const at = lower.indexOf(prefix);
      if (at < 0) continue;
      const words = text
        .slice(at + prefix.length)
        .split(/[,.!]/)[0]
        .split(/\s+/)
        .filter((word) => word !== '' && !word.includes('@'));
      if (words.length > 0) {
        this.name = words.join(' ');
        learned.push('name');
        break;
      }
    }
    const email = text.split(/\s+/).map(emailLike).find((word) => word.includes('@'));
    if (email !== undefined) {
      this.email = email;
      learned.push('email');
    }
    const at = lower.indexOf('i need ');
    if (at >= 0) {
      const reason = text.slice(at + 'i need '.length).trim().replace(/[.!]+$/, '');
      if (reason !== '') {
        this.reason = reason;
        learned.push('reason');
      }
    }
    return learned;
  }

  missing() {
    return ['name', 'email', 'reason'].filter((field) => this[field] === null);
  }

  progress() {
    const missing = this.missing();
    return missing.length === 0
      ? 'I have everything I need. Say "submit" to send it.'
      : `Still needed: ${missing.join(', ')}.`;
  }

  errors() {
    const errors = this.missing().map((field) => `${field} is missing`);
    if (this.email !== null && !validEmail(this.email)) {
      errors.push(`email \`${this.email}\` needs an @ and a dot after it`);
    }
    return errors;
  }

  submit() {
    const errors = this.errors();
    if (errors.length > 0) {
      say(`I cannot submit yet: ${errors.join('; ')}.`);
      return CONTINUE;
    }
    say(`Submitted. Thank you, ${this.name}: we will write to ${this.email} about "${this.reason}".`);
    return END;
  }
}

/** `word` without the punctuation around it, nor a trailing dot. (Letters
 * are told by case, as the engine is built without Unicode property
 * escapes.) */
function emailLike(word) {
  const keep = (c) => /[0-9@._+-]/.test(c) || c.toLowerCase() !== c.toUpperCase();
  const chars = [...word];
  let start = 0;
  let end = chars.length;
  while (start < end && !keep(chars[start])) start += 1;
  while (end > start && !keep(chars[end - 1])) end -= 1;
  return chars.slice(start, end).join('').replace(/\.+$/, '');
}

/** An @ with something before it, and a dot with something on both sides after it. */
function validEmail(email) {
  const at = email.indexOf('@');
  if (at <= 0) return false;
  const domain = email.slice(at + 1);
  const dot = domain.indexOf('.');
  return dot > 0 && dot < domain.length - 1;
}

export const agent = exportAgent(Intake);
