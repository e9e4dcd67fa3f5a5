build/h-wal/obj/wal/wal.o: wal/wal.c wal/wal.h common/loop.h \
 engine/engine.h common/buf.h common/checksum.h common/err.h common/log.h \
 common/util.h wal/wal_int.h
wal/wal.h:
common/loop.h:
engine/engine.h:
common/buf.h:
common/checksum.h:
common/err.h:
common/log.h:
common/util.h:
wal/wal_int.h:
