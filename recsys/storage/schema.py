"""The schema of ``campfire.db``: the kinds and default weights the tables accept, the migrations
(``PRAGMA user_version`` counts those applied) and the splitter that runs them statement by statement."""

from __future__ import annotations

ITEM_KINDS = ("message", "story", "imported")
INTERACTION_KINDS = (
    "authored",
    "replied",
    "reacted",
    "requested",
    "rated_up",
    "rated_down",
    "viewed",
    "recommended",
    "clicked",
    "dismissed",
)
# Default weight of each interaction kind in a member's profile (negative = pushes away).
DEFAULT_WEIGHTS = {
    "authored": 1.0,
    "replied": 0.8,
    "reacted": 0.6,
    "requested": 1.0,
    "rated_up": 1.5,
    "rated_down": -1.0,
    "viewed": 0.2,
    "recommended": 0.0,
    "clicked": 0.8,
    "dismissed": -0.7,
}

_MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE guilds (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        digest_channel_id INTEGER,
        digest_time TEXT,            -- HH:MM guild local time; NULL = settings default
        timezone TEXT,               -- IANA name; NULL = settings default
        persona TEXT,
        nsfw_allowed INTEGER NOT NULL DEFAULT 0,
        learn_channel_ids TEXT NOT NULL DEFAULT '[]',   -- JSON; empty = every visible channel
        ignore_channel_ids TEXT NOT NULL DEFAULT '[]',  -- JSON
        last_digest_date TEXT,       -- YYYY-MM-DD guild local date of the last daily post
        created_at REAL NOT NULL
    );
    CREATE TABLE channels (
        id INTEGER PRIMARY KEY,
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL DEFAULT 'text',
        parent_id INTEGER,
        nsfw INTEGER NOT NULL DEFAULT 0,
        persona TEXT,
        -- permission snapshot: {"public": bool, "roles": [ids that may view], "members": [ids], "denied_members": [ids]}
        visibility TEXT NOT NULL DEFAULT '{"public": true}',
        updated_at REAL NOT NULL
    );
    CREATE INDEX channels_guild ON channels(guild_id);
    CREATE TABLE members (
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        role_ids TEXT NOT NULL DEFAULT '[]',
        is_bot INTEGER NOT NULL DEFAULT 0,
        opted_out INTEGER NOT NULL DEFAULT 0,
        subscribed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE INDEX members_user ON members(user_id);
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        channel_id INTEGER,
        kind TEXT NOT NULL CHECK (kind IN ('message', 'story', 'imported')),
        author_id INTEGER,
        title TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        url TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        nsfw INTEGER NOT NULL DEFAULT 0,
        rating REAL NOT NULL DEFAULT 0,
        external_id TEXT,
        parent_item_id INTEGER,
        meta TEXT NOT NULL DEFAULT '{}',
        UNIQUE (guild_id, external_id)
    );
    CREATE INDEX items_guild_created ON items(guild_id, created_at);
    CREATE INDEX items_author ON items(author_id);
    CREATE TABLE interactions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        member_id INTEGER NOT NULL,
        item_id INTEGER REFERENCES items(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('authored', 'replied', 'reacted', 'requested', 'rated_up',
            'rated_down', 'viewed', 'recommended', 'clicked', 'dismissed')),
        weight REAL NOT NULL,
        created_at REAL NOT NULL,
        text TEXT NOT NULL DEFAULT '',   -- what the interaction is about, embedded into the interaction index
        source_id INTEGER,               -- the Discord message that produced it, when there is one
        dedup_key TEXT NOT NULL UNIQUE
    );
    CREATE INDEX interactions_member ON interactions(guild_id, member_id, created_at);
    CREATE INDEX interactions_item ON interactions(item_id);
    CREATE TABLE embeddings (
        owner TEXT NOT NULL CHECK (owner IN ('item', 'interaction')),
        owner_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,          -- float32 little-endian, L2-normalised, `dim` values
        PRIMARY KEY (owner, owner_id)
    );
    CREATE INDEX embeddings_guild ON embeddings(owner, guild_id);
    CREATE TABLE recommendations_sent (
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        member_id INTEGER NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        date TEXT NOT NULL,            -- YYYY-MM-DD guild local date of the digest
        score REAL NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        PRIMARY KEY (guild_id, member_id, item_id)
    );
    CREATE TRIGGER items_drop_vectors AFTER DELETE ON items BEGIN
        DELETE FROM embeddings WHERE owner = 'item' AND owner_id = OLD.id;
    END;
    CREATE TRIGGER interactions_drop_vectors AFTER DELETE ON interactions BEGIN
        DELETE FROM embeddings WHERE owner = 'interaction' AND owner_id = OLD.id;
    END;
    """,
    # 1 -> 2: the item a digest reason quotes (another member's words), so forgetting its author
    # can blank the reason
    """
    ALTER TABLE recommendations_sent ADD COLUMN reason_item_id INTEGER;
    CREATE INDEX recommendations_reason_item ON recommendations_sent(reason_item_id);
    """,
    # 2 -> 3: tombstones of forgotten members and of their messages (recsys/storage/privacy.py), so
    # nothing of theirs is recorded again: keyed BLAKE2b digests of the ids (never the ids), the key
    # drawn once per database
    """
    CREATE TABLE tombstone_key (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        key BLOB NOT NULL
    );
    INSERT INTO tombstone_key (id, key) VALUES (1, randomblob(32));
    CREATE TABLE tombstones (
        kind TEXT NOT NULL CHECK (kind IN ('author', 'message')),
        digest BLOB NOT NULL,
        PRIMARY KEY (kind, digest)
    ) WITHOUT ROWID;
    """,
    # 3 -> 4: conversations as items (recsys/conversations.py builds them, recsys/conversation_sync.py
    # stores them). chat_lines: every recorded member message of a guild channel, short ones too (the
    # builder links "yes, that worked" to its question); conversation_id = the item that holds the line.
    # items.conversation_id: for a message item inside a conversation, the conversation item; for the
    # conversation item, its own id; NULL for a line no conversation holds (then the message is its own
    # item). item_members: who wrote in an item (participant) and who was addressed in it by @mention,
    # "nick:" or a reply without writing (addressed): never recommended to either. guild_rankers: a
    # guild's own fitted ranker, kept only when it beat the default on the held-out time slice.
    """
    ALTER TABLE items ADD COLUMN conversation_id INTEGER;
    CREATE INDEX items_conversation ON items(conversation_id);
    CREATE TABLE chat_lines (
        message_id INTEGER PRIMARY KEY,
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        channel_id INTEGER NOT NULL,
        author_id INTEGER NOT NULL,
        created_at REAL NOT NULL,
        text TEXT NOT NULL,
        reply_to INTEGER,
        mentions TEXT NOT NULL DEFAULT '[]',   -- JSON list of mentioned user ids
        conversation_id INTEGER
    );
    CREATE INDEX chat_lines_channel ON chat_lines(guild_id, channel_id, created_at);
    CREATE INDEX chat_lines_conversation ON chat_lines(conversation_id);
    CREATE INDEX chat_lines_author ON chat_lines(author_id);
    -- a database from before: its message items become chat lines, so the next sync of a channel
    -- (a live message there, or an import) groups its recent history into conversations
    INSERT OR IGNORE INTO chat_lines (message_id, guild_id, channel_id, author_id, created_at, text, reply_to)
        SELECT id, guild_id, channel_id, author_id, created_at, text, parent_item_id FROM items
        WHERE kind = 'message' AND channel_id IS NOT NULL AND author_id IS NOT NULL
          AND json_extract(meta, '$.thread') IS NULL;
    CREATE TABLE item_members (
        guild_id INTEGER NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        member_id INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('participant', 'addressed')),
        PRIMARY KEY (item_id, member_id, role)
    ) WITHOUT ROWID;
    CREATE INDEX item_members_member ON item_members(guild_id, member_id);
    CREATE TABLE guild_rankers (
        guild_id INTEGER PRIMARY KEY REFERENCES guilds(id) ON DELETE CASCADE,
        weights TEXT NOT NULL,            -- JSON: recsys.rank.Ranker fields
        fitted_at REAL NOT NULL,
        metrics TEXT NOT NULL DEFAULT '{}' -- JSON: held-out NDCG@10 of the default and of this ranker, sizes
    );
    """,
    # 4 -> 5: guilds whose chat lines were never grouped into conversations (a database from before
    # schema 4: its message items became chat lines above, but nothing synced them) are queued here;
    # Recommender.start builds their conversations once (recsys/conversation_backfill.py) and
    # removes them from the queue
    """
    CREATE TABLE conversation_backfill (
        guild_id INTEGER PRIMARY KEY
    );
    INSERT OR IGNORE INTO conversation_backfill (guild_id)
        SELECT DISTINCT l.guild_id FROM chat_lines l
        WHERE NOT EXISTS (SELECT 1 FROM chat_lines c WHERE c.guild_id = l.guild_id AND c.conversation_id IS NOT NULL);
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)


def split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN … END;) whole."""
    out, buf = [], []
    depth = 0
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        buf.append(line)
        upper = stripped.upper()
        if upper.endswith("BEGIN"):
            depth += 1
        if upper == "END;":
            depth -= 1
        if stripped.endswith(";") and depth == 0:
            out.append("\n".join(buf))
            buf = []
    if buf:
        out.append("\n".join(buf))
    return out
