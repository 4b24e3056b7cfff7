# cmake -DIN=file.cu -DOUT=file.cu.cpp -P rewrite_launches.cmake
# Rewrites every launch `name<<<config>>>(args)` into `::gum_emu::launch(name, "name", __FILE__,
# __LINE__, config)(args)`; only the two tokens change, so a launch may span several lines and
# every line keeps its number (the #line directive points diagnostics at the .cu file).
file(READ ${IN} text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*)[ \t]*<<<" "::gum_emu::launch(\\1, \"\\1\", __FILE__, __LINE__, " text "${text}")
string(REGEX REPLACE ">>>([ \t\r\n]*)\\(" ")\\1(" text "${text}")
if(text MATCHES "<<<|>>>")
  message(FATAL_ERROR "${IN}: a kernel launch the rewrite does not understand (expected name<<<config>>>(args))")
endif()
file(WRITE ${OUT}.tmp "#line 1 \"${IN}\"\n${text}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
