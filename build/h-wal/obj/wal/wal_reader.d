build/h-wal/obj/wal/wal_reader.o: wal/wal_reader.c common/err.h \
 common/util.h wal/wal.h common/loop.h engine/engine.h common/buf.h \
 wal/wal_int.h
common/err.h:
common/util.h:
wal/wal.h:
common/loop.h:
engine/engine.h:
common/buf.h:
wal/wal_int.h:
