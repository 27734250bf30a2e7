// A notebook agent that exercises the JavaScript helper library: own fields
// in session state, the `user` KV bucket with a TTL, notes in the history,
// a tool with optional and list arguments, refusals of the host as
// `HostError` and of registry calls as `CallError`, `Fail`, an unexpected
// exception whose stack reaches the caller, and outbound HTTP (`fetch`,
// `post`, server-sent events with `stream`). plugins/python/notebook is the
// same agent in Python.

import {
  Agent, CallError, END, Fail, HostError, HttpError, exportAgent, http, kv, registry, s, say, session, tool,
} from '../../../guest-sdk/js/agentbox.js';

class Notebook extends Agent {
  static NAME = 'notebook';
  static VERSION = '0.1.0';
  static DESCRIPTION = 'Keeps notes for a conversation and remembers what to call the user';

  notes = null;
  tags = null;

  onStart() {
    const name = kv.open('user').get('name');
    say(name ? `Hello again, ${name}.` : 'Hello.');
  }

  onMessage(text) {
    const space = text.indexOf(' ');
    const [command, rest] = space < 0 ? [text, ''] : [text.slice(0, space), text.slice(space + 1)];
    switch (command) {
      case 'call-me':
        kv.open('user').set('name', rest, 60_000);
        say(`I will call you ${rest} for a minute.`);
        break;
      case 'note':
        Notebook.tools.add_note.run.call(this, { text: rest });
        session.note(`the user noted: ${rest}`);
        break;
      case 'visits':
        say(`visit ${kv.open('user').increment('visits')}`);
        break;
      case 'history':
        say(session.history(4).map(({ role, content }) => `${role}: ${content}`).join(' | '));
        break;
      case 'set':
        try {
          session.set(rest, true);
          say(`set ${rest}`);
        } catch (err) {
          if (!(err instanceof HostError)) throw err;
          say(`refused (${err.kind})`);
        }
        break;
      case 'bucket':
        try {
          kv.open(rest);
        } catch (err) {
          if (!(err instanceof HostError)) throw err;
          say(`refused (${err.kind})`);
        }
        break;
      case 'call': {
        const space = rest.indexOf(' ');
        try {
          say(JSON.stringify(registry.call(rest.slice(0, space), JSON.parse(rest.slice(space + 1)))));
        } catch (err) {
          if (!(err instanceof CallError)) throw err;
          say(`refused (${err.kind}) ${JSON.stringify(err.detail)}`);
        }
        break;
      }
      case 'fetch':
      case 'post':
        try {
          const response = command === 'fetch' ? http.get(rest) : http.postJson(rest, { notes: this.notes });
          say(`${response.status} ${response.header('x-seen', '-')} ${response.text()}`);
        } catch (err) {
          if (!(err instanceof HttpError)) throw err;
          say(`refused (${err.kind})`);
        }
        break;
      case 'stream':
        try {
          const response = http.get(rest);
          for (const event of response.events()) {
            say(`${event.event ?? 'message'}: ${event.data}`);
          }
        } catch (err) {
          if (!(err instanceof HttpError)) throw err;
          say(`refused (${err.kind})`);
        }
        break;
      case 'fail':
        throw new Fail(`failed on purpose: ${rest}`);
      case 'crash':
        return this.noSuchMethod();
      case 'bye':
        say(`${(this.notes ?? []).length} notes kept.`);
        return END;
      default:
        say(`${(this.notes ?? []).length} notes.`);
    }
  }

  onEnd(reason) {
    say(`Closing the notebook (${reason}).`);
  }

  static tools = {
    add_note: tool(
      'Adds a note.',
      {
        text: s.string({ minLength: 1, maxLength: 100 }).describe('What to note.'),
        tags: s.array(s.string()).describe('Words to find it by.').optional(),
      },
      function ({ text, tags = [] }) {
        this.notes = [...(this.notes ?? []), text];
        for (const tag of tags) {
          this.tags = this.tags ?? {};
          (this.tags[tag] = this.tags[tag] ?? []).push(text);
        }
        return { notes: this.notes.length };
      },
    ),
    find: tool(
      'The notes tagged `tag`.',
      { tag: s.string() },
      function ({ tag }) {
        return (this.tags ?? {})[tag] ?? [];
      },
      { requires: ['notes'] },
    ),
    recall: tool(
      "What the user's bucket holds under `key`, if anything.",
      { key: s.string() },
      function ({ key }) {
        return kv.open('user').get(key);
      },
    ),
    raw: tool('A value that is not JSON.', {}, function () {
      return 10n;
    }),
  };
}

export const agent = exportAgent(Notebook);
